"""Layout rules of the Slicer module's measurement table, in the library (SpineAnalysisLib.results_table)."""

from __future__ import annotations

import pytest

from SpineAnalysisLib import results_table
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.measure import alignment, disc, vertebra


def test_parameter_order_comes_from_the_measure_modules():
    every = [name for parameters in (disc.PARAMETERS, vertebra.PARAMETERS, alignment.PARAMETERS) for name, _unit in parameters]
    assert set(results_table.PARAMETER_ORDER) == set(every) and len(results_table.PARAMETER_ORDER) == len(set(every))
    assert list(results_table.PARAMETER_ORDER[: len(disc.PARAMETERS)]) == [name for name, _unit in disc.PARAMETERS]
    assert results_table.PARAMETER_ORDER[-len(alignment.PARAMETERS):] == tuple(name for name, _unit in alignment.PARAMETERS)
    assert results_table.column_order(["zeta", "dhi", "wedge_ratio"]) == ["dhi", "wedge_ratio", "zeta"]


def test_rows_run_cranial_to_caudal_then_unknown_then_spine():
    rows = [("spine", "L1-S1"), ("disc", "L5-S1"), ("vertebra", "S1"), ("vertebra", "T12"), ("disc", "T12-L1"), ("vertebra", "odd")]
    ordered = sorted(rows, key=lambda row: results_table.row_sort_key(*row))
    assert ordered == [("vertebra", "T12"), ("disc", "T12-L1"), ("disc", "L5-S1"), ("vertebra", "S1"), ("vertebra", "odd"), ("spine", "L1-S1")]


def test_subject_sex_and_age_from_form_values():
    assert [results_table.subject_sex(v) for v in ("female", "MALE", "unknown", "", None)] == ["F", "M", None, None, None]
    assert results_table.subject_age(0) is None and results_table.subject_age(45) == 45.0
    with pytest.raises(InputError):
        results_table.subject_sex("x")
    with pytest.raises(InputError):
        results_table.subject_age(500)
