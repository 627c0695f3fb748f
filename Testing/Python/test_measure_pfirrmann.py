"""Pfirrmann grade estimate on Pfirrmann's criteria (SpineAnalysisLib.measure.pfirrmann).

The rule on given criteria values, and synthetic discs painted into a real MR volume (the bundled MyoSegmenTUM
sample with its expert vertebral bodies; discs = the space between them): bright homogeneous -> I-II,
grey -> III-IV, black and collapsed -> V.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib.measure import normative, pfirrmann
from SpineAnalysisLib.measurements import measure_case

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "Samples"

THRESHOLDS = pfirrmann.Thresholds(nucleus_p2_5=0.40, nucleus_sd=0.1, contrast_p2_5=0.12, contrast_sd=0.08,
                                  annulus_median=0.25, inhomogeneity_median=0.10, inhomogeneity_sd=0.1)


def features(nucleus, annulus, inhomogeneity=0.05):
    return pfirrmann.SignalFeatures(nucleus, annulus, nucleus - annulus, inhomogeneity, 100, 100)


@pytest.mark.parametrize(
    "f, height_z, ratio, grade, decided_by",
    [
        (features(0.80, 0.20, 0.05), 0.0, 1.0, 1, "homogeneous"),
        (features(0.80, 0.20, 0.30), 0.0, 1.0, 2, "inhomogeneous"),
        (features(0.80, 0.20, 0.05), -2.5, 1.0, 3, "height decreased"),
        (features(0.45, 0.40, 0.05), 0.0, 1.0, 3, "unclear distinction"),
        # dark limit min(0.25, 0.40 / 2) = 0.20, grey halves split at 0.30
        (features(0.36, 0.24, 0.20), 0.0, 1.0, 3, "upper half"),
        (features(0.36, 0.40, 0.20), 0.0, 1.0, 4, "distinction lost"),
        (features(0.36, 0.24, 0.20), 0.0, 0.4, 4, "but not black"),
        (features(0.26, 0.24, 0.20), 0.0, 1.0, 4, "lower half"),
        (features(0.26, 0.24, 0.20), 0.0, 0.4, 5, "collapsed"),
        (features(0.15, 0.15, 0.20), 0.0, 0.9, 4, "not collapsed"),
        (features(0.15, 0.15, 0.20), -1.0, 0.4, 5, "black"),
        (features(0.15, 0.15, 0.20), -3.5, None, 5, "DHI z"),
    ],
)
def test_rule_on_criteria(f, height_z, ratio, grade, decided_by):
    result = pfirrmann.estimate(f, THRESHOLDS, height_z, ratio)
    assert result.grade == grade, result.text
    assert decided_by in result.text and 0.5 <= result.confidence <= 1.0
    assert result.text.startswith(f"Pfirrmann {pfirrmann.ROMAN[grade]} (estimate")


def test_confidence_grows_with_the_margin():
    near = pfirrmann.estimate(features(0.41, 0.20, 0.05), THRESHOLDS, 0.0, 1.0)
    far = pfirrmann.estimate(features(0.90, 0.20, 0.05), THRESHOLDS, 0.0, 1.0)
    assert near.grade in (1, 2) and far.grade in (1, 2) and near.confidence < far.confidence
    assert pfirrmann.estimate(None, THRESHOLDS).grade is None


def test_regions_split_nucleus_and_annulus():
    # a 30 x 10 mm disc sampled at 0.5 mm: annulus = outer 12 % at both ends, nucleus = central 40 % x half height
    along, across = np.meshgrid(np.arange(-15, 15, 0.5) + 0.25, np.arange(-5, 5, 0.5) + 0.25)
    values = np.where(np.abs(along) < 6, 200.0, 50.0)
    nucleus, annulus = pfirrmann.regions(values.ravel(), along.ravel(), across.ravel())
    assert set(nucleus) == {200.0} and set(annulus) == {50.0}
    f = pfirrmann.signal_features(values.ravel(), along.ravel(), across.ravel(), 250.0)
    assert f.nucleus == pytest.approx(0.8) and f.annulus == pytest.approx(0.2) and f.contrast == pytest.approx(0.6)


def test_a_dark_intranuclear_band_does_not_make_a_bright_nucleus_grey():
    """Pfirrmann II: bright nucleus with a dark horizontal band at mid-height (intranuclear cleft). The band fills
    with its blur more than half of the nucleus region's rows; the nucleus signal is the bright tissue beside it,
    not the median of the mix."""
    along, across = np.meshgrid(np.arange(-15, 15, 0.5) + 0.25, np.arange(-5, 5, 0.5) + 0.25)
    values = np.where(np.abs(along) < 6, 200.0, 50.0)
    values[(np.abs(along) < 6) & (np.abs(across) < 1.3)] = 60.0  # the band: 6 of the nucleus region's 10 rows
    f = pfirrmann.signal_features(values.ravel(), along.ravel(), across.ravel(), 250.0)
    assert f.nucleus == pytest.approx(0.8)
    nucleus, _ = pfirrmann.regions(values.ravel(), along.ravel(), across.ravel())
    assert np.median(nucleus) / 250.0 == pytest.approx(0.24)  # the median would call it dark grey
    assert f.inhomogeneity > THRESHOLDS.inhomogeneity_median  # inhomogeneous: II, not I
    assert pfirrmann.estimate(f, THRESHOLDS, 0.0, 1.0).grade == 2


# ----- synthetic discs in a real volume ---------------------------------------------------------------------
def _sample_with_discs():
    from SpineAnalysisLib.model.dataset import add_pseudo_discs
    from SpineAnalysisLib.model.preprocessing import sagittal_frame

    image = sitk.ReadImage(str(SAMPLE / "MyoSegmenTUM_VB3_02_image.nii.gz"))
    labels = sitk.ReadImage(str(SAMPLE / "MyoSegmenTUM_VB3_02_labels.nii.gz"))
    frame = sagittal_frame(labels)
    lab = frame.to_canonical(sitk.GetArrayFromImage(labels).astype(np.int32))
    add_pseudo_discs(lab, {20, 21, 22, 23, 24}, 25)
    img = frame.to_canonical(sitk.GetArrayFromImage(image)).astype(float)
    return image, labels, frame, lab, img


def _paint(img, lab, disc, csf, nucleus, annulus, rng, collapse=False):
    """Paint one disc (canonical frame: slice, row S->I, column A->P) and a CSF band behind it."""
    upper, lower = disc - 100, disc - 100 + 1
    for s in np.flatnonzero((lab == disc).any(axis=(1, 2))):
        mask = lab[s] == disc
        rows = np.arange(mask.shape[0])[:, None]
        has = mask.any(axis=0)
        r0 = np.where(has, np.argmax(mask, axis=0), 0)[None, :]
        r1 = np.where(has, mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0), 0)[None, :]
        columns = np.flatnonzero(has)
        c0, c1 = columns.min(), columns.max()
        if collapse:  # keep the middle 2 rows of every column; the rest becomes the neighbouring bodies
            middle = (r0 + r1) // 2
            lab[s][mask & (rows < middle)] = upper
            lab[s][mask & (rows > middle + 1)] = lower
            mask = lab[s] == disc
            r0, r1 = middle, middle + 1
        u = (np.arange(mask.shape[1])[None, :] - c0) / max(c1 - c0, 1)
        central = (u > 0.25) & (u < 0.75) & (np.abs(rows - (r0 + r1) / 2) <= (r1 - r0) / 4 + 0.5)
        img[s][mask] = np.where(central, nucleus, annulus)[mask] + rng.normal(0, 4, int(mask.sum()))
        band = slice(max(int(r0[0, has].min()) - 3, 0), int(r1[0, has].max()) + 4)
        img[s, band, c1 + 4 : c1 + 16] = csf + rng.normal(0, 4, img[s, band, c1 + 4 : c1 + 16].shape)


def _to_image(array, like, frame, dtype):
    out = sitk.GetImageFromArray(frame.from_canonical(np.clip(array, 0, 255).astype(dtype)))
    out.CopyInformation(like)
    return out


def test_synthetic_discs_in_the_bundled_volume():
    image, labels, frame, lab, img = _sample_with_discs()
    rng = np.random.default_rng(7)
    csf = 240.0
    t = normative.pfirrmann_thresholds("expert")
    thresholds = pfirrmann.Thresholds.from_dict(t)
    grey = csf * (0.25 * thresholds.dark + 0.75 * thresholds.nucleus_p2_5)  # upper grey half
    # L1-L2 and L2-L3 bright and homogeneous, L3-L4 grey, L4-L5 black and collapsed
    _paint(img, lab, 120, csf, 0.85 * csf, 0.25 * csf, rng)
    _paint(img, lab, 121, csf, 0.85 * csf, 0.25 * csf, rng)
    _paint(img, lab, 122, csf, grey, grey * 0.95, rng)
    _paint(img, lab, 123, csf, 0.1 * csf, 0.1 * csf, rng, collapse=True)
    rows = measure_case(_to_image(img, image, frame, np.uint8), _to_image(lab, labels, frame, np.uint8), masks="expert")
    grades = {m.level: m for m in rows if m.parameter == "pfirrmann_estimate"}
    assert grades["L1-L2"].value in (1, 2), grades["L1-L2"].note
    assert grades["L2-L3"].value in (1, 2), grades["L2-L3"].note
    assert grades["L3-L4"].value in (3, 4), grades["L3-L4"].note
    assert grades["L4-L5"].value == 5, grades["L4-L5"].note
    assert "collapsed" in grades["L4-L5"].note and "estimate" in grades["L4-L5"].note
    confidence = {m.level: m.value for m in rows if m.parameter == "pfirrmann_confidence"}
    assert all(0.5 <= confidence[level] <= 1.0 for level in ("L1-L2", "L2-L3", "L3-L4", "L4-L5"))
    # delta SI stays its own continuous output
    assert all(m.value is not None for m in rows if m.parameter == "delta_si" and m.level in ("L1-L2", "L2-L3"))


def test_the_estimate_on_thick_slices_says_its_thresholds_come_from_1_mm_scans():
    """On 4 mm slab copies of the healthy shared scans the estimate reads more grade III (8 -> 12 of 129 discs):
    an estimate made on thick sagittal slices says so; one made on the 1 mm volume does not."""
    from SpineAnalysisLib.evaluation import thick_slice_copy

    image, labels, frame, lab, img = _sample_with_discs()
    rng = np.random.default_rng(7)
    for disc in (120, 121, 122):
        _paint(img, lab, disc, 240.0, 0.85 * 240.0, 0.25 * 240.0, rng)
    thin_image, thin_labels = _to_image(img, image, frame, np.uint8), _to_image(lab, labels, frame, np.uint8)
    thick_image, thick_labels = thick_slice_copy(thin_image, thin_labels, 4.0)
    for volume, label_map, thick in ((thin_image, thin_labels, False), (thick_image, thick_labels, True)):
        grades = [m for m in measure_case(volume, label_map, masks="expert") if m.parameter == "pfirrmann_estimate" and m.value is not None]
        assert grades
        assert all(("sagittal slices are 4.0 mm thick" in m.note) == thick for m in grades), [m.note for m in grades]


def test_the_unpainted_sample_is_not_graded_as_t2():
    """The sample is a water-fat gradient-echo series: no delta SI, no Pfirrmann estimate, no signal z-score."""
    image, labels, frame, lab, _ = _sample_with_discs()
    rows = measure_case(image, _to_image(lab, labels, frame, np.uint8), masks="expert")
    for m in rows:
        if m.structure == "disc" and m.parameter in ("delta_si", "pfirrmann_estimate", "delta_si_z"):
            assert m.value is None and "T2" in m.note, (m.level, m.parameter, m.note)


def test_the_bundled_healthy_sample_has_no_flagged_disc():
    """Its expert bodies with the disc space between them, against the expert reference (the sample is left out
    of the reference): healthy discs, so no z-score is outside normal range."""
    image, labels, frame, lab, _ = _sample_with_discs()
    rows = measure_case(image, _to_image(lab, labels, frame, np.uint8), masks="expert")
    z_rows = [m for m in rows if m.structure == "disc" and m.unit == "z" and m.value is not None]
    assert {m.parameter for m in z_rows} == {"dhi_z", "hdr_z"}  # no delta SI on this gradient-echo series
    assert len(z_rows) >= 8 and not any(m.flag for m in z_rows), [(m.level, m.parameter, m.value) for m in z_rows]
    assert all(m.reference == normative.reference_name("expert") for m in z_rows)
