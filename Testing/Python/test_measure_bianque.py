"""BianqueNet parameters against their published definitions (Zheng et al., Nat Commun 13:841, 2022).

DH (area-based, 0.8 x height for a rectangle), DHI (2 DH / (HV_upper + HV_lower); DH / HV_L5 at L5-S1), HDR
(DH / W_big), delta SI (histogram peaks normalised to CSF) and the healthy-reference z-scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import phantoms as ph
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.measure import bianque, disc, normative, plane
from SpineAnalysisLib.measure.sections import Section
from SpineAnalysisLib.measurements import measure_case


def rows_by(rows):
    return {(r.level, r.parameter): r for r in rows}


# ----- pure definitions ------------------------------------------------------------------------------------
def _rectangle_section(width: float, height: float, h: float = 0.25, bulge: float = 0.0) -> Section:
    """A disc mask: rectangle width x height (mm) centred at 0, optionally with a bulge beyond its ends."""
    n = int(80 / h)
    u0 = v0 = -40.0 + h / 2  # pixel centres symmetric about 0: the mask is exactly width x height
    cols, rows = np.meshgrid(np.arange(n), np.arange(n))
    u, v = u0 + cols * h, v0 + rows * h
    mask = (np.abs(u) <= width / 2 + bulge) & (np.abs(v) <= height / 2)
    values = np.where(mask, 123, 0).astype(np.uint16)
    patch = plane.Patch(values, u0, v0, h, plane.SAGITTAL, 0.0)
    return Section(123, patch, mask, float(mask.sum()) * h * h, False, None, "")


def test_dh_of_a_rectangle_is_0_8_times_its_height():
    section = _rectangle_section(36.0, 10.0)
    dh, w_small = bianque.dh_area(section, np.array([18.0, 0.0]), np.array([-18.0, 0.0]))
    assert w_small == pytest.approx(36.0)
    assert dh == pytest.approx(0.8 * 10.0, abs=0.1)  # the band edges are resolved to one 0.25 mm pixel


def test_w_big_includes_the_bulge_beyond_the_corner_midpoints():
    section = _rectangle_section(36.0, 10.0, bulge=3.0)  # mask 42 mm wide, corners 36 mm apart
    width = bianque.w_big(section, np.array([18.0, 0.0]), np.array([-18.0, 0.0]))
    assert width == pytest.approx(42.0, abs=0.3)


def test_histogram_peaks_and_delta_si_formula():
    # 600 nucleus pixels at 200, 400 annulus pixels at 100, a little noise at other values
    disc = np.r_[np.full(600, 200), np.full(400, 100), np.arange(120, 180)]
    peak1, peak2 = bianque.histogram_peaks(disc)
    assert (peak1, peak2) == (200, 100)  # |100 - 190| * 400 beats |200 - 190| * 600
    assert bianque.delta_si(disc, 250) == pytest.approx(100 * 255 / 250)
    # peak2 is the weighted distance rule, not simply the second most frequent value
    disc = np.r_[np.full(500, 120), np.full(450, 114), np.full(60, 20)]
    peak1, peak2 = bianque.histogram_peaks(disc)
    assert peak1 == 120 and peak2 == 20  # |20 - 114| * 60 = 5640 > |114 - 114| * 450 = 0
    assert bianque.delta_si(disc, 0) is None


def test_healthy_reference_names_and_missing_levels():
    name = normative.reference_name("model")
    assert name.startswith("SpineAnalysis healthy reference") and normative.reference_name("expert") != name
    mean, sd, note = normative.reference("dhi", "L3-L4", "model")
    assert 0.1 < mean < 0.6 and sd > 0 and name in note and "n = " in note
    z, _ = normative.z_score("dhi", "L3-L4", mean - 2 * sd, "model", "F", 45)
    assert z == pytest.approx(-2.0)
    assert normative.z_score("dhi", "C2-C3", 0.3)[0] is None  # no healthy discs at that level
    with pytest.raises(ValueError):
        normative.reference("dh_bianque", "L4-L5")
    with pytest.raises(InputError, match="sex"):
        normative.normalise_sex("X")
    with pytest.raises(InputError, match="age"):
        normative.check_age(-3)
    with pytest.raises(InputError, match="masks"):
        normative.check_masks("other")


# ----- on a phantom ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rect_spine():
    # rectangles: bodies 26 mm (S1 20 mm), discs 10 mm, all 36 mm deep -> HV = body height
    return ph.build_spine((22, 23, 24, 26), heights={"default": 26.0, 26: (20.0, 20.0)}, discs=10.0)


@pytest.fixture(scope="module")
def rect_case(rect_spine):
    spacing, direction = (0.8, 0.8, 0.8), ph.oblique(20.0, axis=(0.2, 0.4, 0.9))
    label_map, image = ph.render_phantom(rect_spine, spacing, direction)
    return label_map, image, rows_by(measure_case(image, label_map, sex="F"))


def test_dh_dhi_hdr_on_rectangular_discs(rect_spine, rect_case):
    _, _, table = rect_case
    tol = 0.8  # one voxel
    for level, upper, lower in (("L3-L4", 22, 23), ("L4-L5", 23, 24)):
        dh = table[(level, "dh_bianque")].value
        assert dh == pytest.approx(0.8 * 10.0, abs=0.8 * tol)
        hv_upper, hv_lower = rect_spine.hv(upper), rect_spine.hv(lower)
        assert hv_upper == pytest.approx(26.0)
        expected = 2 * dh / (hv_upper + hv_lower)
        assert table[(level, "dhi")].value == pytest.approx(expected, rel=tol / 26)
        assert table[(level, "hdr")].value == pytest.approx(dh / 36.0, rel=tol / 36 + 0.01)
        assert "2 DH / (HV upper + HV lower)" in table[(level, "dhi")].note
    # L5-S1: DH / HV_L5 (S1 is only 20 mm: the other formula would give 2 DH / 46)
    dh = table[("L5-S1", "dh_bianque")].value
    assert table[("L5-S1", "dhi")].value == pytest.approx(dh / 26.0, rel=tol / 26)
    assert table[("L5-S1", "dhi")].value != pytest.approx(2 * dh / 46.0, rel=0.05)
    assert "L5-S1" in table[("L5-S1", "dhi")].note


def test_z_scores_use_the_reported_values(rect_case):
    _, _, table = rect_case
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        for parameter in ("dhi", "hdr", "delta_si"):
            expected, note = normative.z_score(parameter, level, table[(level, parameter)].value, "model")
            row = table[(level, f"{parameter}_z")]
            if expected is None:
                assert row.value is None and row.reference == "" and row.flag is None
                continue
            assert row.value == pytest.approx(expected)
            assert row.unit == "z" and row.reference == normative.reference_name("model")
            assert row.flag == (expected < -1.959964)
    assert not any(key[1] == "dh_bianque_z" for key in table)


def test_delta_si_with_automatic_csf_reference(rect_case):
    _, _, table = rect_case
    for level in ("L3-L4", "L4-L5", "L5-S1"):
        row = table[(level, "delta_si")]
        # nucleus 200, annulus 100, CSF 250 (uint8): |200 - 100| * 255 / 250 = 102
        assert row.value == pytest.approx(102.0)
        assert "automatic" in row.note


def test_delta_si_with_canal_label_and_float_image(rect_spine):
    spine = ph.build_spine((22, 23, 24), heights=26.0, discs=10.0, canal_label=True)
    label_map, image = ph.render_phantom(spine, (0.7, 0.7, 0.7), ph.oblique(10.0))
    table = rows_by(measure_case(image, label_map))
    assert table[("L3-L4", "delta_si")].value == pytest.approx(102.0)
    assert "label 61" in table[("L3-L4", "delta_si")].note
    # a float image with another scale: the ratio is scale-free, only 0-255 quantisation remains
    scaled = sitk.Cast(image, sitk.sitkFloat32) * 3.7
    table = rows_by(measure_case(scaled, label_map))
    assert table[("L3-L4", "delta_si")].value == pytest.approx(102.0, abs=2.0)


def test_delta_si_missing_without_image_or_without_bright_csf(rect_case):
    label_map, image, _ = rect_case
    table = rows_by(measure_case(None, label_map))
    for parameter in ("delta_si", "pfirrmann_estimate", "delta_si_z"):
        row = table[("L4-L5", parameter)]
        assert row.value is None and "no image" in row.note
    assert table[("L4-L5", "dhi")].value is not None  # geometry does not need the image
    # a T1-like image (CSF darker than the disc): no CSF reference, no made-up delta SI
    array = sitk.GetArrayFromImage(image)
    t1 = np.where(array == ph.CSF, 30, array).astype(np.uint8)
    t1_image = sitk.GetImageFromArray(t1)
    t1_image.CopyInformation(image)
    row = rows_by(measure_case(t1_image, label_map))[("L4-L5", "delta_si")]
    assert row.value is None and row.note


def test_score_recomputes_z_rows_and_flags(rect_case):
    label_map, image, _ = rect_case
    rows = measure_case(image, label_map)
    lowered = [m if m.parameter != "dhi" else type(m)(**{**m.__dict__, "value": 0.01}) for m in rows]
    rescored = normative.score(lowered, sex="F", age=60)
    assert len(rescored) == len(rows) and rescored is not lowered
    for before, after in zip(rows, rescored):
        if after.parameter == "dhi_z" and after.value is not None:
            assert after.flag is True and after.value < -3 and "sex/age pooled" in after.note
            assert after.reference == normative.reference_name("model")
        elif after.parameter != "dhi":
            assert after.value == before.value and after.flag == before.flag
    with pytest.raises(InputError):
        normative.score(rows, sex="X")


# ----- DH on the disc space between the bodies; CSF reference in a narrowed canal ------------------------
def _disc_between_bodies(gap: float, drawn: float, h: float = 0.25, lower_top: float | None = None) -> Section:
    """Bodies 123 (above) and 124 (below) 36 mm deep, ``gap`` mm apart; the disc (122) drawn ``drawn`` mm tall in
    the middle of the gap. ``lower_top``: where the lower body's outline starts (mm below the disc centre)."""
    n = int(80 / h)
    u0 = v0 = -40.0 + h / 2
    cols, rows = np.meshgrid(np.arange(n), np.arange(n))
    u, v = u0 + cols * h, v0 + rows * h
    inside = np.abs(u) <= 18.0
    values = np.zeros((n, n), np.uint16)
    values[inside & (v > gap / 2) & (v <= gap / 2 + 25)] = 123
    values[inside & (v < -(lower_top if lower_top is not None else gap / 2)) & (v >= -gap / 2 - 25)] = 124
    mask = inside & (np.abs(v) <= drawn / 2)
    values[mask] = 122
    patch = plane.Patch(values, u0, v0, h, plane.SAGITTAL, 0.0)
    return Section(122, patch, mask, float(mask.sum()) * h * h, False, None, "")


def test_dh_between_bodies_does_not_depend_on_how_thick_the_disc_is_drawn():
    Da, Dp = np.array([18.0, 0.0]), np.array([-18.0, 0.0])
    for drawn in (10.0, 8.0, 6.0):  # the disc drawn as tall as the space, and 20 % / 40 % thinner
        section = _disc_between_bodies(10.0, drawn)
        assert bianque.dh_between_bodies(section, Da, Dp, 123, 124) == pytest.approx(0.8 * 10.0, abs=0.25)
        assert bianque.dh_area(section, Da, Dp)[0] == pytest.approx(0.8 * drawn, abs=0.25)  # the drawn disc
    # a body outline stopping 9 mm short of its endplate: the space counts at most 2 mm beyond each disc edge
    short = _disc_between_bodies(10.0, 8.0, lower_top=14.0)
    assert bianque.dh_between_bodies(short, Da, Dp, 123, 124) == pytest.approx(0.8 * (8.0 + 2 * bianque.DISC_EDGE_TOLERANCE_MM), abs=0.25)
    # a body missing: not measurable between the bodies
    assert bianque.dh_between_bodies(_disc_between_bodies(10.0, 8.0), Da, Dp, 123, 999) is None


def test_disc_without_a_bounding_body_gets_dh_on_its_mask_and_no_z_score(rect_case):
    label_map, image, table = rect_case
    assert normative.measured_between_bodies(table[("L3-L4", "dh_bianque")].note)
    assert table[("L3-L4", "hdr_z")].value is not None
    array = sitk.GetArrayFromImage(label_map)
    without_l4 = sitk.GetImageFromArray(np.where(array == 23, 0, array).astype(array.dtype))
    without_l4.CopyInformation(label_map)
    table = rows_by(measure_case(image, without_l4))
    row = table[("L3-L4", "dh_bianque")]
    assert row.value is not None and "disc mask" in row.note and not normative.measured_between_bodies(row.note)
    assert table[("L3-L4", "hdr")].value is not None
    z = table[("L3-L4", "hdr_z")]
    assert z.value is None and "no z-score" in z.note and z.flag is None
    # re-scoring for another sex/age (Slicer) keeps the z-score withheld, with its reason
    rescored = {(m.level, m.parameter): m for m in normative.score(list(table.values()), sex="F", age=60)}
    for parameter in ("dhi_z", "hdr_z"):
        assert rescored[("L3-L4", parameter)] == table[("L3-L4", parameter)]


def test_csf_reference_found_in_a_canal_narrowed_at_the_disc_level():
    """Canal (grey 250) 8 mm deep behind the disc, narrowed to 1 mm over the disc's height (stenosis); soft
    tissue 60 around it and a fat pad (150) further back. The reference is the fluid's grey value, not the fat's."""
    h = 0.5
    behind, across = np.meshgrid(np.arange(0, 40, h), np.arange(-20, 20, h))  # mm behind Dp, mm along the spine
    grey = np.full(behind.shape, 60.0)
    canal = (behind >= 3) & (behind < 11)
    narrowed = np.abs(across) <= 4  # the disc level: only 1 mm of fluid left
    grey[canal & ~narrowed] = 250.0
    grey[(behind >= 3) & (behind < 4) & narrowed] = 250.0
    grey[(behind >= 20) & (behind < 28)] = 150.0
    coords = np.stack([-behind.ravel(), across.ravel()], axis=-1)  # e = +u (anterior), Dp at the origin
    labels = np.zeros(grey.size, np.uint16)
    e, Dp = np.array([1.0, 0.0]), np.array([0.0, 0.0])
    values, note = bianque.csf_region(labels, grey.ravel(), coords, Dp, e, 4.0 + bianque.CSF_BEYOND_DISC_MM)
    assert np.median(values) == pytest.approx(250.0) and "brightest" in note
    # a band only as tall as the disc holds too little fluid (under 10 %): the fat pad would be taken instead
    values, _ = bianque.csf_region(labels, grey.ravel(), coords, Dp, e, 4.0)
    assert np.median(values) == pytest.approx(150.0)


def test_unseen_scan_check_compares_the_same_discs_per_split():
    from SpineAnalysisLib.measure import build_reference

    def row(case, level, value, subject=None):
        return {"case": case, "subject": subject or case, "level": level, "parameter": "dhi", "value": value}

    expert = [row("A", "L1-L2", 0.30), row("A", "L2-L3", 0.40), row("B", "L1-L2", 0.20)]
    model = [row("A", "L1-L2", 0.33), row("A", "L2-L3", 0.44), row("B", "L1-L2", 0.18), row("B", "L4-L5", 0.9)]
    check = build_reference.unseen_scan_check(model, expert, {"A": "train", "B": "validation"})
    assert check["train"]["n_discs"] == 2 and check["train"]["mean_relative_difference"] == pytest.approx(0.10)
    assert check["validation"] == {"n_discs": 1, "n_volunteers": 1, "mean_relative_difference": pytest.approx(-0.10), "se": None}
    shipped = normative.load()["references"]["model"]["unseen_scans"]
    assert shipped["validation"]["n_discs"] >= 40 and shipped["train"]["n_discs"] >= 150
