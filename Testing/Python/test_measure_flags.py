"""The one "outside normal range" rule (SpineAnalysisLib.measure.flags) and where it is used."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from SpineAnalysisLib.measure import flags

ROOT = Path(__file__).resolve().parents[2]


def test_rule_is_the_central_95_percent_on_the_abnormal_side():
    assert flags.Z_LIMIT == pytest.approx(1.959964, abs=1e-6)
    assert 50 * (1 + math.erf(-flags.Z_LIMIT / math.sqrt(2))) == pytest.approx(flags.LOW_PERCENTILE)
    # disc height and signal: only the low side
    for parameter in ("dhi_z", "hdr_z", "delta_si_z", "dhi"):
        assert flags.outside_normal(-1.97, parameter) is True
        assert flags.outside_normal(-1.95, parameter) is False
        assert flags.outside_normal(+5.0, parameter) is False
    # unknown direction: both sides
    assert flags.outside_normal(2.0, "something_z") is True and flags.outside_normal(-2.0, "something_z") is True
    assert flags.outside_normal(1.9, "something_z") is False
    for missing in (None, float("nan"), "x"):
        assert flags.outside_normal(missing, "dhi_z") is None


def test_z_and_percentile_give_the_same_flag():
    for z in (-3.0, -1.97, -1.959, -1.0, 0.0, 1.97, 3.0):
        percentile = 50 * (1 + math.erf(z / math.sqrt(2)))
        for parameter in ("dhi", "other"):
            assert flags.outside_normal(z, parameter) == flags.outside_normal_percentile(percentile, parameter)


def test_texts():
    assert flags.flag_text("dhi_z", -2.34) == "dhi low, z=-2.3"
    assert flags.flag_text("dhi_z", -1.0) == ""
    assert flags.flags_of({"dhi_z": -2.5, "hdr_z": 0.1, "dhi": 0.1, "delta_si_z": None}) == ["dhi low, z=-2.5"]


def test_flags_module_needs_only_the_standard_library():
    """The Slicer module imports it: no numpy, no SimpleITK, no project imports."""
    tree = ast.parse((ROOT / "SpineAnalysisLib" / "measure" / "flags.py").read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math"}


def test_no_other_flag_threshold_in_the_library():
    """The rule is defined once: no stray 1.645 / |z| > 2 thresholds left in library code."""
    for path in (ROOT / "SpineAnalysisLib").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "1.645" not in text, path
        assert "Z_LIMIT = " not in text or path.name == "flags.py", path


def test_measurement_rows_carry_reference_and_flag(tmp_path):
    from SpineAnalysisLib.measurements import _row, write_measurements

    low = _row("disc", "L4-L5", "dhi_z", -2.5, "z", "", 123, "some healthy reference")
    assert low.flag is True and low.reference == "some healthy reference"
    assert _row("disc", "L4-L5", "dhi_z", -1.0, "z", "", 123, "ref").flag is False
    assert _row("disc", "L4-L5", "dhi", 0.1, "ratio", "", 123).flag is None  # not a z-score: no flag
    assert _row("disc", "L4-L5", "dhi_z", None, "z", "no reference", 123).flag is None
    csv_path, _ = write_measurements([low], tmp_path)
    assert csv_path.read_text(encoding="utf-8").splitlines()[1].endswith(",some healthy reference,true,ok")  # then the quality column
