"""Label maps of other tools (TotalSegmentator, VerSe/TPTBox, SPINEPS) on CT and MRI; trabecular_hu; modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from SpineAnalysisLib import label_schemes, modality
from SpineAnalysisLib.cli import main
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.measure import inputs, normative, trabecular
from SpineAnalysisLib.measure_segmentation import measure_segmentation

SAMPLES = Path(__file__).resolve().parents[3] / "shared" / "data" / "samples"
TS = SAMPLES / "totalsegmentator"
TS_REPORT = TS / "spine_report" / "example_ct_report"
TPTBOX_CT = SAMPLES / "tptbox" / "sample_ct"
VERSE = SAMPLES / "verse" / "sub-verse004_seg-vert_msk.nii.gz"
needs_samples = pytest.mark.skipif(not TS_REPORT.is_dir(), reason="../shared/data/samples is not available")


def _values(result) -> dict[tuple[str, str], object]:
    return {(m.level, m.parameter): m for m in result.measurements}


@pytest.fixture(scope="module")
def totalseg():
    if not TS_REPORT.is_dir():
        pytest.skip("../shared/data/samples is not available")
    ct = sitk.ReadImage(str(TS / "example_ct.nii.gz"))
    total = sitk.ReadImage(str(TS_REPORT / "totalseg.nii.gz"))
    bodies = sitk.ReadImage(str(TS_REPORT / "totalseg_vertebrae_body.nii.gz"))
    result = measure_segmentation(ct, total, bodies=bodies)
    return ct, total, bodies, result


def test_totalsegmentator_example_ct_against_its_spine_report(totalseg):
    ct, total, bodies, result = totalseg
    assert result.label_scheme == "totalsegmentator" and result.bodies and result.modality == "CT"
    assert result.levels == ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]
    report = json.loads((TS_REPORT / "spine_report.json").read_text())["results"]
    rows = _values(result)
    total_array, body_array = sitk.GetArrayViewFromImage(total), sitk.GetArrayViewFromImage(bodies)
    for n, level in enumerate(("L1", "L2", "L3", "L4", "L5")):
        ours = [rows[(level, f"height_{p}_mm")].value for p in ("anterior", "middle", "posterior")]
        theirs = [report[f"vertebrae_{level}_height_{p}_mm"] for p in ("anterior", "middle", "posterior")]
        # the vertebral height (mean of the three) agrees within one voxel (3 mm); single positions within
        # 1.5 voxels: TotalSegmentator measures in the sagittal slice with the largest height spread, we in the
        # mid-sagittal plane (docs/label-schemes.md, "Side by side with TotalSegmentator")
        assert abs(np.mean(ours) - np.mean(theirs)) <= 3.0, (level, ours, theirs)
        assert np.max(np.abs(np.subtract(ours, theirs))) <= 4.5, (level, ours, theirs)
        # our body volume is the voxel count of (vertebra AND body class) of the stored masks
        intersection = np.count_nonzero((total_array == 31 - n) & (body_array == 1)) * 27.0
        assert rows[(level, "volume_mm3")].value == pytest.approx(intersection)
        assert abs(intersection / 1000 / report[f"vertebrae_{level}_volume_ml"] - 1) < 0.25


def test_ct_withholds_mri_parameters_and_adds_trabecular_hu(totalseg):
    rows = _values(totalseg[3])
    assert rows[("L4-L5", "height_mean_mm")].value is not None
    disc_rows = [m for m in totalseg[3].measurements if m.level == "L4-L5"]
    withheld = {m.parameter for m in disc_rows if m.note == modality.NOT_ON_CT}
    assert withheld >= {"delta_si", "pfirrmann_estimate", "pfirrmann_confidence", "dhi_z", "hdr_z", "delta_si_z"} and all(m.value is None for m in disc_rows if m.parameter in withheld)
    assert withheld == {m.parameter for m in disc_rows if modality.mri_only(m.parameter)}
    # re-scoring for another sex/age (Slicer) keeps them withheld
    rescored = [m for m in normative.score(totalseg[3].measurements, sex="F", age=60) if m.level == "L4-L5"]
    assert rescored == disc_rows
    assert rows[("L4-L5", "dhi")].value is not None  # a geometric ratio: measured on CT
    l1 = rows[("L1", "trabecular_hu")]
    assert 50 < l1.value < 300 and l1.unit == "HU"
    assert ("screening hint, not a diagnosis" in l1.note) == (l1.value <= 160)
    assert rows[("L1-S1", "lumbar_lordosis_deg")].value is not None and rows[("S1", "sacral_slope_deg")].value is not None


@needs_samples
def test_whole_vertebrae_without_bodies_are_levelled_and_withheld(tmp_path):
    code = main(["measure", str(TS / "example_ct.nii.gz"), str(TS_REPORT / "totalseg.nii.gz"), "-o", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "measure_summary.json").read_text())
    assert summary["levels"][:2] == ["T11", "T12"] and summary["bodies"] is False and summary["modality"] == "CT"
    rows = json.loads((tmp_path / "measurements.json").read_text())
    assert rows and all(row["value"] is None and "--bodies" in row["note"] for row in rows)


@needs_samples
@pytest.mark.parametrize("labels", ["totalseg_vertebrae_body.nii.gz", "ambiguous", "unknown"])
def test_unusable_maps_get_one_line_and_exit_2(labels, tmp_path, capsys):
    path = TS_REPORT / labels
    if labels != "totalseg_vertebrae_body.nii.gz":
        array = np.zeros((20, 20, 20), np.uint16)
        array[2:8, 5:15, 5:15] = 26 if labels == "ambiguous" else 300
        array[10:16, 5:15, 5:15] = 28
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(sitk.ReadImage(str(TS / "example_ct.nii.gz"))[:20, :20, :20])
        path = tmp_path / "labels.nii.gz"
        sitk.WriteImage(image, str(path))
        sitk.WriteImage(sitk.ReadImage(str(TS / "example_ct.nii.gz"))[:20, :20, :20], str(tmp_path / "ct.nii.gz"))
        ct = tmp_path / "ct.nii.gz"
    else:
        ct = TS / "example_ct.nii.gz"
    assert main(["measure", str(ct), str(path), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spineanalysis: error: ")
    expected = {"totalseg_vertebrae_body.nii.gz": "body map without levels", "ambiguous": "--label-scheme spineanalysis|totalsegmentator|verse|spineps", "unknown": "none of the label schemes"}
    assert expected[labels] in err[0]


@needs_samples
def test_tptbox_ct_crop_with_subregion_map():
    ct = sitk.ReadImage(str(TPTBOX_CT / "sub-ct_label-22_ct.nii.gz"))
    vert = sitk.ReadImage(str(TPTBOX_CT / "sub-ct_seg-vert_label-22_msk.nii.gz"))
    subreg = sitk.ReadImage(str(TPTBOX_CT / "sub-ct_seg-subreg_label-22_msk.nii.gz"))
    result = measure_segmentation(ct, vert, bodies=subreg)
    assert result.label_scheme == "verse" and result.levels == ["L2", "L3", "L4"]
    assert result.modality == "CT" and "Hounsfield" in result.modality_source  # a crop: no air, fat below -100
    rows = _values(result)
    # L3 is whole in the crop: its body is the vertebra's voxels in sub-regions 49 + 50
    body = (sitk.GetArrayViewFromImage(vert) == 22) & np.isin(sitk.GetArrayViewFromImage(subreg), (49, 50))
    assert rows[("L3", "volume_mm3")].value == pytest.approx(body.sum() * 1.5**3)
    assert 20 < rows[("L3", "height_middle_mm")].value < 35
    assert 20 < rows[("L3", "ap_depth_mm")].value < 50
    assert rows[("L3", "trabecular_hu")].value is not None


@needs_samples
def test_verse_mask_levels():
    translation = label_schemes.translate(sitk.ReadImage(str(VERSE)))
    assert translation.scheme == "verse" and not translation.bodies
    assert translation.levels() == ["T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5"]


def test_spineps_style_maps_measure_like_the_body_map(totalseg):
    """A SPINEPS instance map (whole vertebrae X, discs 100 + X, endplates 200 + X) with its semantic map
    (49 corpus, 62 endplate, 41 arch, 100 disc), built from the TotalSegmentator sample, measures the same
    bodies and discs as the TotalSegmentator maps."""
    ct, total, bodies, reference = totalseg
    ours = sitk.GetArrayFromImage(label_schemes.translate(total, "totalsegmentator", bodies).label_map)
    whole = sitk.GetArrayFromImage(label_schemes.translate(total, "totalsegmentator").label_map)
    body_class = sitk.GetArrayViewFromImage(bodies) == 1
    instance = np.where(ours >= 100, ours, whole).astype(np.uint16)
    semantic = np.zeros_like(instance)
    semantic[(whole > 0) & ~body_class] = 41
    semantic[(ours > 0) & (ours < 100)] = 49
    semantic[ours >= 100] = 100
    # the upper layer of each body is its endplate: 200 + X in the instance map, 62 in the semantic map
    top = (ours > 0) & (ours < 100) & np.roll((ours == 0) | (ours >= 100), -1, axis=0)
    instance[top] = 200 + ours[top]
    semantic[top] = 62
    maps = []
    for array in (instance, semantic):
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(total)
        maps.append(image)
    assert label_schemes.recognise(maps[0])[0] == "spineps"
    result = measure_segmentation(ct, maps[0], bodies=maps[1])
    assert result.label_scheme == "spineps" and result.levels == reference.levels
    expected = _values(reference)
    for key, row in _values(result).items():
        assert row.value == pytest.approx(expected[key].value, abs=1e-6), key


def _phantom(spacing, core_hu: float, cortex_hu: float = 1200.0, cortex_mm: float = 2.0):
    """A 40 x 30 x 30 mm box body (L1) with a cortex of ``cortex_mm`` around a uniform core, in air."""
    size = [int(round(70 / s)) for s in spacing]
    grid = np.stack(np.meshgrid(*[np.arange(n) * s - 35 + s / 2 for n, s in zip(size, spacing)], indexing="ij"), axis=-1)
    half = np.array([20.0, 15.0, 15.0])
    inside = np.all(np.abs(grid) <= half, axis=-1)
    core = np.all(np.abs(grid) <= half - cortex_mm, axis=-1)
    hu = np.full(inside.shape, -1000.0)
    hu[inside] = cortex_hu
    hu[core] = core_hu
    image = sitk.GetImageFromArray(np.transpose(hu, (2, 1, 0)).astype(np.int16))
    image.SetSpacing(spacing)
    labels = sitk.GetImageFromArray(np.transpose(inside, (2, 1, 0)).astype(np.uint16) * 20)
    labels.CopyInformation(image)
    return image, labels


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 3.0)])
@pytest.mark.parametrize("core_hu", [95.0, 140.0, 210.0])
def test_trabecular_hu_is_the_core_without_cortex(spacing, core_hu):
    image, labels = _phantom(spacing, core_hu)
    parameter, value, unit, note = trabecular.rows(image, labels, inputs.load(image, labels).stats)[20]
    assert parameter == "trabecular_hu" and unit == "HU" and value == core_hu
    if core_hu <= 110:
        assert "osteoporosis likely" in note and "not a diagnosis" in note
    elif core_hu <= 160:
        assert "low bone density possible" in note
    else:
        assert "not a diagnosis" not in note


def test_trabecular_core_too_small_is_withheld():
    image, labels = _phantom((1.0, 1.0, 1.0), 150.0)
    thin = sitk.GetArrayFromImage(labels)
    thin[:, :, :] = 0
    thin[30:38, 20:50, 20:50] = 20  # an 8 mm slab: nothing lies 5 mm inside it
    small = sitk.GetImageFromArray(thin)
    small.CopyInformation(labels)
    value, note = trabecular.trabecular_hu(image, small, 20, np.zeros(3, int), np.array(small.GetSize()) - 1)
    assert value is None and "not measurable" in note


def test_modality_from_dicom_tag_and_value_range():
    mr = sitk.GetImageFromArray(np.random.default_rng(0).integers(0, 800, (8, 8, 8)).astype(np.int16))
    assert modality.detect(mr)[0] == "MR"
    ct = sitk.GetImageFromArray(np.where(np.arange(512).reshape(8, 8, 8) % 3 == 0, -1000, 40).astype(np.int16))
    assert modality.detect(ct)[0] == "CT"
    mr.SetMetaData("0008|0060", "CT")
    assert modality.detect(mr) == ("CT", "DICOM Modality tag CT")


@pytest.mark.parametrize(
    "name, terminology, expected",
    [
        ("vertebrae_L1", "", 20),
        ("L1 vertebra", "", 20),
        ("vertebrae_S1", "", 26),
        ("sacrum", "", label_schemes.SACRUM_SEGMENT),
        ("Segment_1", "SCT^123037004^Anatomical Structure~SCT^66794005^L1 vertebra~^^~Anatomic codes - DICOM master list~^^~^^", 20),
        ("L4/L5 intervertebral disc", "", 123),
        ("vertebrae_body", "", label_schemes.BODY_SEGMENT),
        ("intervertebral_discs", "", label_schemes.DISC_SEGMENT),
        ("spinal_cord", "", 60),
        ("liver", "", None),
    ],
)
def test_segment_names_and_terminology(name, terminology, expected):
    assert label_schemes.label_for_segment(name, terminology) == expected


@needs_samples
def test_batch_with_a_labels_column_measures_the_given_segmentations(tmp_path):
    pytest.importorskip("distributed")
    pytest.importorskip("pyarrow")
    from SpineAnalysisLib.batch import run_batch

    listing = tmp_path / "cohort.csv"
    listing.write_text(
        "case_id,path,labels,bodies,label_scheme,age,sex\n"
        f"ts,{TS / 'example_ct.nii.gz'},{TS_REPORT / 'totalseg.nii.gz'},{TS_REPORT / 'totalseg_vertebrae_body.nii.gz'},auto,55,M\n"
        f"tptbox,{TPTBOX_CT / 'sub-ct_label-22_ct.nii.gz'},{TPTBOX_CT / 'sub-ct_seg-vert_label-22_msk.nii.gz'},"
        f"{TPTBOX_CT / 'sub-ct_seg-subreg_label-22_msk.nii.gz'},verse,,\n"
        f"bad,{TS / 'example_ct.nii.gz'},{TS_REPORT / 'totalseg.nii.gz'},,sometool,,\n"
    )
    result = run_batch(listing, tmp_path / "out", workers=1, device="cpu", progress=None)
    assert (result.cases, result.succeeded, result.failed) == (3, 2, 1)
    for case_id, levels in (("ts", ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]), ("tptbox", ["L2", "L3", "L4"])):
        folder = tmp_path / "out" / "cases" / case_id
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["levels"] == levels and summary["modality"] == "CT" and summary["model"] == "none (segmentation given)"
        rows = json.loads((folder / "measurements.json").read_text())
        assert any(r["parameter"] == "trabecular_hu" and r["value"] is not None for r in rows)
    errors = (tmp_path / "out" / "errors.csv").read_text()
    assert "sometool" in errors
    normative = (tmp_path / "out" / "normative.csv").read_text().strip().splitlines()
    assert len(normative) == 1  # header only: CT discs are not compared with the MRI references


@needs_samples
def test_segmenting_a_ct_is_refused_with_how_to_bring_a_segmentation(tmp_path, capsys):
    """The TotalSegmentator example CT (no DICOM tag: recognised by its value range)."""
    assert main(["segment", str(TS / "example_ct.nii.gz"), "-o", str(tmp_path / "labels.nii.gz"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CT volume" in err[0] and "spineanalysis measure CT LABELS" in err[0] and "--label-scheme" in err[0]


def test_totalsegmentator_cord_kept_and_organs_ignored(totalseg):
    ct, total, bodies, _ = totalseg
    array = sitk.GetArrayFromImage(total)
    array[50:60, 30:33, 60:62] = 79  # spinal_cord
    array[10:14, 80:90, 20:30] = 5  # liver
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(total)
    translation = label_schemes.translate(image, bodies=bodies)
    values = sitk.GetArrayViewFromImage(translation.label_map)
    assert translation.scheme == "totalsegmentator" and np.count_nonzero(values == 60) == 60
    assert any("ignored (ids 5)" in note for note in translation.notes) and not np.isin(values, (5, 79)).any()


def test_discs_take_their_levels_from_the_bodies_around_them():
    """L2-L4 bodies stacked along S (1 mm voxels, LPS); disc slabs above L2, between the bodies and below L4,
    and a stray piece far behind the column, which has no level."""
    bodies = np.zeros((100, 40, 40), np.uint16)  # (k = S, j = P, i = L)
    discs = np.zeros_like(bodies, dtype=bool)
    for n, label in enumerate((21, 22, 23)):  # L2, L3, L4 from the top (k grows superiorly in LPS: top = high k)
        top = 90 - n * 25
        bodies[top - 18:top, 10:30, 10:30] = label
        discs[top:top + 6, 10:30, 10:30] = True
    discs[14:20, 10:30, 10:30] = True  # below L4 (its body spans k 22-39)
    discs[60:62, 36:39, 0:3] = True  # stray
    reference = sitk.GetImageFromArray(bodies)
    levelled, notes = label_schemes.level_discs(discs, bodies, reference)
    found = {int(v): int(np.count_nonzero(levelled == v)) for v in np.unique(levelled) if v}
    assert found == {120: 2400, 121: 2400, 122: 2400, 123: 2400}  # L1-L2 (above L2), L2-L3, L3-L4, L4-L5 (below L4)
    assert notes and "left out" in notes[0] and levelled[60, 37, 1] == 0
