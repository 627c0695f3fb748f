"""The healthy reference and the Pfirrmann estimate on the shared healthy volunteers (skips without ../shared).

* z-scores of the expert-labelled healthy discs, each subject scored against a reference built WITHOUT it
  (leave-one-subject-out): |mean z| <= 0.5 and at most 5 % flagged by the one flag rule;
* the shipped reference_healthy.json ("expert" part) is what build_reference computes from the data;
* the Pfirrmann estimate of the healthy T2 discs is mostly I-II (in-sample for its thresholds: they come from
  the same healthy discs, so this checks the rule's consistency, not its accuracy).
"""

from __future__ import annotations

import numpy as np
import pytest

from SpineAnalysisLib.measure import build_reference, flags, normative
from SpineAnalysisLib.model.dataset import default_data_dir

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not (DATA / "manifest.csv").is_file(), reason="shared lumbar MRI data not available")


@pytest.fixture(scope="module")
def expert_rows():
    return build_reference.collect(DATA, "expert", log=lambda *_: None)


def test_leave_one_subject_out_z_scores_of_healthy_expert_discs(expert_rows):
    z_by_parameter = build_reference.leave_one_subject_out(expert_rows)
    assert set(z_by_parameter) == {"dhi", "hdr", "delta_si"}
    for parameter, zs in z_by_parameter.items():
        zs = np.array(zs)
        flagged = np.mean([flags.outside_normal(z, parameter) for z in zs])
        assert len(zs) >= 90, parameter
        assert abs(zs.mean()) <= 0.5, (parameter, zs.mean())
        assert flagged <= 0.05, (parameter, flagged)


def test_shipped_expert_reference_is_rebuilt_from_the_data(expert_rows):
    shipped = normative.load()["references"]["expert"]
    rebuilt = build_reference.summarise(expert_rows)
    for parameter, levels in rebuilt["parameters"].items():
        for level, entry in levels.items():
            assert shipped["parameters"][parameter][level]["n"] == entry["n"], (parameter, level)
            assert shipped["parameters"][parameter][level]["mean"] == pytest.approx(entry["mean"], rel=1e-4), (parameter, level)
    assert shipped["pfirrmann"] == pytest.approx(rebuilt["pfirrmann"], rel=1e-3)


def test_pfirrmann_estimate_of_healthy_t2_discs_is_mostly_i_ii(expert_rows):
    grades = np.array([r["value"] for r in expert_rows if r["parameter"] == "pfirrmann_estimate"])
    assert len(grades) >= 60
    assert np.mean(grades <= 2) >= 0.8, np.bincount(grades.astype(int))
    assert np.mean(grades == 5) <= 0.02


def test_a_known_label_error_is_left_out_of_the_expert_reference():
    """VB3_36's expert L4 is outlined 4-6 mm off the body in the image (model.dataset.KNOWN_LABEL_ERRORS): the expert
    reference's label map leaves it out, and with it the two gap discs it would bound; a neighbouring case keeps its."""
    import SimpleITK as sitk

    rows = {row["case_id"]: row for row in build_reference.healthy_cases(DATA)}
    wrong = set(np.unique(sitk.GetArrayFromImage(build_reference.expert_label_map(DATA, rows["VB3_36"]))))
    right = set(np.unique(sitk.GetArrayFromImage(build_reference.expert_label_map(DATA, rows["VB3_35"]))))
    assert {22, 24, 121}.issubset(wrong) and not wrong & {23, 122, 123}
    assert {22, 23, 24, 121, 122, 123}.issubset(right)
