"""DICOM SEG (highdicom): written from a label map with per-level names and SNOMED codes, referencing the source
series, and read back onto a reference grid; structured measurement CSV with the DICOM identifiers."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("highdicom")
import pydicom  # noqa: E402

from dicom_series import spine_phantom, write_mr_series  # noqa: E402
from SpineAnalysisLib import dicomseg, imageio  # noqa: E402
from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.cli import main  # noqa: E402
from SpineAnalysisLib.errors import InputError  # noqa: E402
from SpineAnalysisLib.measurements import Measurement  # noqa: E402
from SpineAnalysisLib.measurements_export import dicom_identifiers, write_structured_csv  # noqa: E402

SAMPLE_CT = Path(__file__).resolve().parents[3] / "shared" / "data" / "samples" / "totalsegmentator" / "example_ct_dicom"


@pytest.fixture
def series(tmp_path):
    image_array, labels = spine_phantom()
    uids = write_mr_series(tmp_path / "mr", image_array)
    reference = imageio.read_image(tmp_path / "mr")
    return tmp_path / "mr", uids, reference, labels


def _segments(path):
    return {int(item.SegmentNumber): item for item in pydicom.dcmread(str(path)).SegmentSequence}


def test_seg_round_trip_keeps_voxels_names_codes_and_references(series, tmp_path):
    folder, uids, reference, labels = series
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reference), spine_phantom()[0])  # slice order as written
    path = dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), folder, tmp_path / "out" / "seg.dcm",
                                    model="spine-mri-2d 1.0.0", edited=["L4"])  # fmt: skip
    seg = pydicom.dcmread(str(path))
    assert seg.SOPClassUID == dicomseg.SEGMENTATION_STORAGE and seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == uids["StudyInstanceUID"] and seg.FrameOfReferenceUID == uids["FrameOfReferenceUID"]
    assert seg.PatientID == uids["PatientID"]
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uids["SeriesInstanceUID"]
    source_uids = {pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID for f in folder.iterdir()}
    referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == source_uids
    segments = _segments(path)
    assert [s.SegmentLabel for s in segments.values()] == ["L3", "L3-L4", "L4", "L4-L5", "L5"]
    for item in segments.values():
        structure = scheme.structure_for_name(item.SegmentLabel)
        category, kind = item.SegmentedPropertyCategoryCodeSequence[0], item.SegmentedPropertyTypeCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == ("123037004", "SCT")
        assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == (structure.snomed_code, "SCT", structure.snomed_meaning)
        assert item.SegmentAlgorithmType == ("SEMIAUTOMATIC" if item.SegmentLabel == "L4" else "AUTOMATIC")
        assert item.SegmentAlgorithmName == "spine-mri-2d"
    assert segments[4].SegmentedPropertyTypeCodeSequence[0].CodeValue == "84020006"  # L4/L5 disc, CID 7604

    for reference_input in (folder, reference):  # the DICOM folder, or the image already read
        back, names = dicomseg.read_dicom_seg(path, reference_input)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
        assert imageio.same_grid(back, reference)
        assert names == {22: "L3", 122: "L3-L4", 23: "L4", 123: "L4-L5", 24: "L5"}
    nifti = tmp_path / "mr.nii.gz"  # a NIfTI copy of the series is a valid reference too
    sitk.WriteImage(reference, str(nifti))
    back, _ = dicomseg.read_dicom_seg(path, nifti)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)


def test_manual_segmentation_and_transitional_names(series, tmp_path):
    folder, _, reference, phantom = series
    lookup = np.zeros(256, np.uint16)
    lookup[[22, 122, 23, 123, 24]] = [23, 123, 24, 124, 25]  # L4, L4-L5, L5, L5-L6, L6
    labels = lookup[phantom]
    path = dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), folder, tmp_path / "seg.dcm")
    segments = {s.SegmentLabel: s for s in _segments(path).values()}
    assert set(segments) == {"L4", "L4-L5", "L5", "L5-L6", "L6"}
    assert segments["L5-L6"].SegmentedPropertyTypeCodeSequence[0].CodeValue == scheme.DISC_SNOMED[0]  # not L5/S1's code
    assert all(s.SegmentAlgorithmType == "MANUAL" and "SegmentAlgorithmName" not in s for s in segments.values())
    back, names = dicomseg.read_dicom_seg(path, folder)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert names[124] == "L5-L6" and names[25] == "L6"


def test_reading_maps_by_code_when_the_name_is_foreign_and_refuses_unknown_segments(series, tmp_path):
    folder, _, reference, labels = series
    path = dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), folder, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(str(path))
    seg.SegmentSequence[2].SegmentLabel = "vertebra four"  # another tool's name; the code still says L4
    seg.save_as(str(tmp_path / "renamed.dcm"))
    back, names = dicomseg.read_dicom_seg(tmp_path / "renamed.dcm", folder)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert names[23] == "L4"
    seg.SegmentSequence[0].SegmentLabel = "Liver"
    seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue = "10200004"
    seg.save_as(str(tmp_path / "foreign.dcm"))
    with pytest.raises(InputError, match="'Liver' is not a structure"):
        dicomseg.read_dicom_seg(tmp_path / "foreign.dcm", folder)
    back, names = dicomseg.read_dicom_seg(tmp_path / "foreign.dcm", folder, unknown="skip")
    assert 22 not in names and not (sitk.GetArrayFromImage(back) == 22).any()


def test_reading_onto_another_grid_resamples(series, tmp_path):
    folder, _, reference, labels = series
    path = dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), folder, tmp_path / "seg.dcm")
    crop = reference[3:35, 2:40, 1:5]  # sitk slicing is (x, y, z)
    back, _ = dicomseg.read_dicom_seg(path, crop)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels[1:5, 2:40, 3:35])


def test_bad_input(series, tmp_path):
    folder, _, reference, labels = series
    target = tmp_path / "seg.dcm"
    shifted = imageio.label_map_like(labels, reference)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="different grids"):
        dicomseg.write_dicom_seg(shifted, folder, target)
    with pytest.raises(InputError, match="empty"):
        dicomseg.write_dicom_seg(imageio.label_map_like(np.zeros_like(labels), reference), folder, target)
    mixed = tmp_path / "mixed"
    write_mr_series(mixed, spine_phantom()[0], prefix="A")
    write_mr_series(mixed, spine_phantom()[0], prefix="B")
    with pytest.raises(InputError, match="holds 2 DICOM series"):
        dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), mixed, target)
    with pytest.raises(InputError, match="not a readable DICOM SEG"):
        dicomseg.read_dicom_seg(next(folder.iterdir()), folder)  # an MR image is not a SEG
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".seg.dcm")]


@pytest.mark.skipif(not SAMPLE_CT.is_dir(), reason="../shared/data/samples/totalsegmentator/example_ct_dicom is not there")
def test_real_ct_series_round_trip(tmp_path):
    """A real (anonymised) 20-slice CT series: its files lack Study/Series UIDs, which is refused with a clear
    message unless stand-in UIDs are asked for; an arbitrary label map then round-trips exactly."""
    reference = imageio.read_image(SAMPLE_CT)
    labels = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint16)
    labels[2:10, 100:200, 150:300] = 22
    labels[10:15, 100:220, 150:300] = 122
    labels[15:19, 300:400, 50:90] = scheme.SPINAL_CANAL
    label_map = imageio.label_map_like(labels, reference)
    with pytest.raises(InputError, match="StudyInstanceUID"):
        dicomseg.write_dicom_seg(label_map, SAMPLE_CT, tmp_path / "ct.dcm")
    path = dicomseg.write_dicom_seg(label_map, SAMPLE_CT, tmp_path / "ct.dcm", fill_missing_uids=True)
    seg = pydicom.dcmread(str(path))
    assert seg.FrameOfReferenceUID == pydicom.dcmread(str(next(SAMPLE_CT.iterdir())), stop_before_pixels=True).FrameOfReferenceUID
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 20
    back, names = dicomseg.read_dicom_seg(path, SAMPLE_CT)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert names == {22: "L3", 122: "L3-L4", 61: "spinal canal"}
    again = dicomseg.write_dicom_seg(label_map, SAMPLE_CT, tmp_path / "again.dcm", fill_missing_uids=True)
    assert pydicom.dcmread(str(again)).StudyInstanceUID == seg.StudyInstanceUID  # stand-in UIDs are stable


def test_cli_dicom_seg_write_and_read(series, tmp_path, capsys):
    folder, _, reference, labels = series
    sitk.WriteImage(imageio.label_map_like(labels, reference), str(tmp_path / "labels.nii.gz"))
    assert main(["dicom-seg", str(folder), str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "seg.dcm"), "--model", "spine-mri-2d 1.0.0", "--edited", "all"]) == 0
    assert {s.SegmentAlgorithmType for s in _segments(tmp_path / "seg.dcm").values()} == {"SEMIAUTOMATIC"}
    assert main(["dicom-seg", "--read", str(tmp_path / "seg.dcm"), str(folder), "-o", str(tmp_path / "back.nii.gz")]) == 0
    assert "L3, L3-L4, L4, L4-L5, L5" in capsys.readouterr().out
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "back.nii.gz"))), labels)
    assert main(["dicom-seg", str(tmp_path / "labels.nii.gz"), str(tmp_path / "labels.nii.gz"), "-o", str(tmp_path / "x.dcm")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_structured_measurement_csv_carries_the_dicom_identifiers(series, tmp_path, capsys):
    folder, uids, reference, labels = series
    assert dicom_identifiers(reference) == {"PatientID": uids["PatientID"], "StudyInstanceUID": uids["StudyInstanceUID"],
                                            "SeriesInstanceUID": uids["SeriesInstanceUID"], "Modality": "MR"}  # fmt: skip
    rows = [Measurement("disc", "L4-L5", "dhi", 0.41, "ratio", "", 123), Measurement("vertebra", "L4", "volume_mm3", None, "mm3", "cut by the field of view", 23),
            Measurement("spine", "L3-L5", "lumbar_lordosis_deg", 12.5, "deg", "")]  # fmt: skip
    path = write_structured_csv(rows, tmp_path / "m.csv", image=reference)
    table = list(csv.DictReader(path.open(encoding="utf-8")))
    assert [r["StudyInstanceUID"] for r in table] == [uids["StudyInstanceUID"]] * 3
    assert table[0]["SeriesInstanceUID"] == uids["SeriesInstanceUID"] and table[0]["PatientID"] == uids["PatientID"]
    assert (table[0]["snomed_code"], table[0]["label"], table[0]["value"]) == ("84020006", "123", "0.41")
    assert (table[1]["value"], table[1]["note"], table[2]["snomed_code"]) == ("", "cut by the field of view", "")
    anonymous = list(csv.DictReader(write_structured_csv(rows, tmp_path / "a.csv", image=reference, include_patient_id=False).open(encoding="utf-8")))
    assert "PatientID" not in anonymous[0]
    # the command line: the SEG itself can be the label input
    dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), folder, tmp_path / "seg.dcm")
    assert main(["export-measurements", str(folder), str(tmp_path / "seg.dcm"), "-o", str(tmp_path / "cli.csv")]) == 0
    table = list(csv.DictReader((tmp_path / "cli.csv").open(encoding="utf-8")))
    assert table and {r["SeriesInstanceUID"] for r in table} == {uids["SeriesInstanceUID"]}
    assert {"L4", "L4-L5"} <= {r["level"] for r in table}


def test_written_files_get_the_usual_permissions(series, tmp_path):
    import os
    import stat

    folder, _, reference, labels = series
    path = dicomseg.write_dicom_seg(imageio.label_map_like(labels, reference), folder, tmp_path / "seg.dcm")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_export_training_takes_the_model_output_as_a_dicom_seg_too(series, tmp_path, capsys):
    """In a DICOM workflow both the model's output (AUTOMATIC) and the correction (SEMIAUTOMATIC) are SEGs; the
    original SEG was read as a plain image (one frame per slice per segment) and refused as 'on different grids'."""
    folder, _, reference, labels = series
    original = labels.copy()
    original[original == 123] = 0  # the model missed L4-L5
    for name, array in (("model", original), ("corrected", labels)):
        sitk.WriteImage(imageio.label_map_like(array, reference), str(tmp_path / f"{name}.nii.gz"))
        assert main(["dicom-seg", str(folder), str(tmp_path / f"{name}.nii.gz"), "-o", str(tmp_path / f"{name}.dcm"), "--model", "spine-mri-2d 1.0.0"]) == 0
    capsys.readouterr()
    assert main(["export-training", str(folder), str(tmp_path / "corrected.dcm"), "-o", str(tmp_path / "ds"),
                 "--original", str(tmp_path / "model.dcm"), "--case-id", "mr"]) == 0  # fmt: skip
    assert "(edited: L4-L5)" in capsys.readouterr().out
    from SpineAnalysisLib import annotation

    back = annotation.read_training_case(tmp_path / "ds", "mr")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.original), original)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.labels), labels)
