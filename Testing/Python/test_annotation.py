"""Exporting corrected cases into a training dataset folder (nnU-Net/MONAI layout) and reading them back."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import SimpleITK as sitk

from dicom_series import spine_phantom, write_mr_series
from SpineAnalysisLib import annotation, imageio
from SpineAnalysisLib.cli import main
from SpineAnalysisLib.errors import InputError


def _sagittal(array, spacing=(0.8, 0.8, 4.0)):
    """numpy (slice L->R, row S->I, column A->P) as an image: x = A->P, y = S->I, z = R->L."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((10.0, -20.0, 50.0))
    image.SetDirection((0, 0, -1, 1, 0, 0, 0, -1, 0))
    return image


@pytest.fixture
def case():
    image_array, labels = spine_phantom()
    image = _sagittal(image_array)
    original = labels.copy()
    original[original == 123] = 0  # the model missed the L4-L5 disc...
    original[2, 4:6, 8:30] = 0  # ... and the top rows of L3 in one slice
    original[3, 40:44, 8:30] = 24  # ... and leaked below L5
    return image, imageio.label_map_like(labels, image), imageio.label_map_like(original, image), labels, original


def _tree(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_then_read_back_gives_identical_voxels_names_and_both_label_maps(case, tmp_path):
    image, corrected, original, labels, original_array = case
    dataset = tmp_path / "Dataset501_Spine"
    result = annotation.export_training_case(image, corrected, dataset, "sub-01", original_label_map=original, model="spine-mri-2d 1.2.0")
    assert not result.replaced
    assert {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()} == {
        "dataset.json", "imagesTr/sub-01_0000.nii.gz", "labelsTr/sub-01.nii.gz", "labelsOriginal/sub-01.nii.gz", "provenance/sub-01.json",
    }  # fmt: skip

    back = annotation.read_training_case(dataset, "sub-01")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.labels), labels)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.original), original_array)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), sitk.GetArrayFromImage(image))
    assert imageio.same_grid(back.image, image) and imageio.same_grid(back.labels, image) and imageio.same_grid(back.original, image)
    assert back.names == {22: "L3", 122: "L3-L4", 23: "L4", 123: "L4-L5", 24: "L5"}
    assert sitk.ReadImage(str(dataset / "labelsTr" / "sub-01.nii.gz")).GetPixelID() == sitk.sitkUInt8

    data = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert data["labels"] == {"background": 0, "L3": 22, "L3-L4": 122, "L4": 23, "L4-L5": 123, "L5": 24}
    assert data["numTraining"] == 1 and data["file_ending"] == ".nii.gz" and data["channel_names"] == {"0": "MRI"}
    assert data["training"] == [{"image": "./imagesTr/sub-01_0000.nii.gz", "label": "./labelsTr/sub-01.nii.gz"}]

    provenance = back.provenance
    assert provenance["model"] == {"name": "spine-mri-2d", "version": "1.2.0"}
    assert provenance["exported_utc"].endswith("Z") and provenance["revision"] == 1
    segments = provenance["segments"]
    assert segments["L4-L5"] == {"label": 123, "original_voxels": 0, "corrected_voxels": int((labels == 123).sum()),
                                 "changed_voxels": int((labels == 123).sum()), "status": "added"}  # fmt: skip
    assert segments["L3"]["changed_voxels"] == 2 * 22 and segments["L3"]["status"] == "edited"
    assert segments["L5"]["changed_voxels"] == 2 * 22 and segments["L5"]["status"] == "edited"  # the leak, removed
    assert segments["L4"]["changed_voxels"] == 0 and segments["L4"]["status"] == "unchanged"
    assert sorted(provenance["edited_structures"]) == ["L3", "L4-L5", "L5"]
    assert provenance["changed_voxels_total"] == sum(item["changed_voxels"] for item in segments.values())
    assert annotation.list_cases(dataset) == ["sub-01"]


def test_reexport_updates_only_that_case_and_keeps_its_original(case, tmp_path):
    image, corrected, original, labels, _ = case
    dataset = tmp_path / "dataset"
    annotation.export_training_case(image, corrected, dataset, "a", original_label_map=original, model="m 1")
    annotation.export_training_case(image, original, dataset, "b", original_label_map=original, model="m 1")
    (dataset / "notes.txt").write_text("annotator notes")
    before = _tree(dataset)

    again = labels.copy()
    again[again == 22] = 0  # L3 removed on second thought
    result = annotation.export_training_case(image, imageio.label_map_like(again, image), dataset, "a", annotator="dr. b")
    assert result.replaced
    after = _tree(dataset)
    unchanged = {k for k in before if not k.endswith("a.json") and "/a" not in k and k != "dataset.json"}
    assert unchanged == {"notes.txt", "imagesTr/b_0000.nii.gz", "labelsTr/b.nii.gz", "labelsOriginal/b.nii.gz", "provenance/b.json"}
    assert all(after[k] == before[k] for k in unchanged)  # nothing else touched
    assert after["labelsOriginal/a.nii.gz"] == before["labelsOriginal/a.nii.gz"]  # the model output stays
    assert set(after) == set(before)  # no temporary files left
    back = annotation.read_training_case(dataset, "a")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.labels), again)
    provenance = back.provenance
    assert provenance["revision"] == 2 and len(provenance["history"]) == 2 and provenance["annotator"] == "dr. b"
    assert provenance["model"] == {"name": "m", "version": "1"} and provenance["original_from"] == "earlier export"
    assert provenance["segments"]["L3"]["status"] == "removed"
    data = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert data["numTraining"] == 2 and [t["label"] for t in data["training"]] == ["./labelsTr/a.nii.gz", "./labelsTr/b.nii.gz"]
    assert data["labels"]["L3"] == 22  # still declared (case b has it)


def test_transitional_names_are_kept_per_case(tmp_path):
    image_array, phantom = spine_phantom()
    lookup = np.zeros(256, np.uint16)
    lookup[[22, 122, 23, 123, 24]] = [23, 123, 24, 124, 25]  # L4, L4-L5, L5, L5-L6, L6 (a transitional vertebra)
    labels = lookup[phantom]
    image = _sagittal(image_array)
    annotation.export_training_case(image, imageio.label_map_like(labels, image), tmp_path / "d", "l6")
    back = annotation.read_training_case(tmp_path / "d", "l6")
    assert back.names[124] == "L5-L6" and back.names[25] == "L6"
    assert back.provenance["original_available"] is False and "changed_voxels" not in back.provenance["segments"]["L6"]


def test_export_from_a_dicom_series_keeps_its_uids_in_the_provenance(tmp_path):
    image_array, labels = spine_phantom()
    uids = write_mr_series(tmp_path / "T2_SAG", image_array)
    image = imageio.read_image(tmp_path / "T2_SAG")
    result = annotation.export_training_case(tmp_path / "T2_SAG", imageio.label_map_like(labels, image), tmp_path / "d")
    assert result.case_id == "T2_SAG"
    source = result.provenance["source_image"]
    assert source["SeriesInstanceUID"] == uids["SeriesInstanceUID"] and source["StudyInstanceUID"] == uids["StudyInstanceUID"]
    assert "PatientID" not in json.dumps(result.provenance)  # no patient identifier in a training dataset


def test_bad_input_is_refused_with_nothing_written(case, tmp_path):
    image, corrected, original, labels, _ = case
    dataset = tmp_path / "d"
    with pytest.raises(InputError, match="no segmentation"):
        annotation.export_training_case(image, None, dataset, "x")
    with pytest.raises(InputError, match="empty"):
        annotation.export_training_case(image, imageio.label_map_like(np.zeros_like(labels), image), dataset, "x")
    with pytest.raises(InputError, match="case id"):
        annotation.export_training_case(image, corrected, dataset, "../escape")
    shifted = imageio.label_map_like(labels, image)
    shifted.SetOrigin((0, 0, 0))
    with pytest.raises(InputError, match="different grids"):
        annotation.export_training_case(image, shifted, dataset, "x")
    assert not dataset.exists()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot create the dataset folder"):
        annotation.export_training_case(image, corrected, blocker / "dataset", "x")
    dataset.mkdir()
    (dataset / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "L1": 1}}))
    with pytest.raises(InputError, match="'L1' = 1"):
        annotation.export_training_case(image, corrected, dataset, "x")
    assert sorted(p.name for p in dataset.iterdir()) == ["dataset.json"]


def test_unwritable_folder(case, tmp_path, monkeypatch):
    image, corrected, *_ = case
    dataset = tmp_path / "d"
    dataset.mkdir()
    monkeypatch.setattr(annotation.os, "access", lambda path, mode: False)  # the tests may run as root
    with pytest.raises(InputError, match="not writable"):
        annotation.export_training_case(image, corrected, dataset, "x")
    assert not any(dataset.iterdir())


@pytest.mark.parametrize("fail_at", ["write", "move"])
def test_a_failure_midway_leaves_the_previous_case_intact(case, tmp_path, monkeypatch, fail_at):
    image, corrected, original, labels, _ = case
    dataset = tmp_path / "d"
    annotation.export_training_case(image, corrected, dataset, "a", original_label_map=original, model="m 1")
    before = _tree(dataset)
    calls = {"n": 0}
    if fail_at == "write":
        real = annotation.sitk.WriteImage

        def failing(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device")
            return real(*args, **kwargs)

        monkeypatch.setattr(annotation.sitk, "WriteImage", failing)
    else:
        real = os.replace

        def failing(source, target):
            calls["n"] += 1
            if calls["n"] == 4:  # after the image was replaced and the old labels moved away
                raise OSError(5, "Input/output error")
            return real(source, target)

        monkeypatch.setattr(annotation.os, "replace", failing)
    with pytest.raises(InputError, match="nothing was changed"):
        annotation.export_training_case(image, original, dataset, "a", original_label_map=corrected, model="m 2")
    monkeypatch.undo()
    assert _tree(dataset) == before
    assert not [p for p in dataset.iterdir() if p.name.startswith(".")]


def test_cli_export_training_and_mixed_dicom_folder(case, tmp_path, capsys):
    image, corrected, original, labels, _ = case
    sitk.WriteImage(image, str(tmp_path / "sub-02_T2w.nii.gz"))
    sitk.WriteImage(corrected, str(tmp_path / "fixed.nii.gz"))
    sitk.WriteImage(original, str(tmp_path / "model.nii.gz"))
    dataset = tmp_path / "dataset"
    code = main(["export-training", str(tmp_path / "sub-02_T2w.nii.gz"), str(tmp_path / "fixed.nii.gz"), "-o", str(dataset),
                 "--original", str(tmp_path / "model.nii.gz"), "--model", "spine-mri-2d@1.0.0"])  # fmt: skip
    assert code == 0
    assert "added case sub-02_T2w" in capsys.readouterr().out
    assert annotation.read_training_case(dataset, "sub-02_T2w").provenance["model"]["version"] == "1.0.0"

    image_array, labels = spine_phantom()
    mixed = tmp_path / "mixed"
    write_mr_series(mixed, image_array, prefix="A")
    write_mr_series(mixed, image_array, prefix="B")
    sitk.WriteImage(imageio.label_map_like(labels, imageio.read_image(tmp_path / "sub-02_T2w.nii.gz")), str(tmp_path / "l.nii.gz"))
    before = _tree(dataset)
    assert main(["export-training", str(mixed), str(tmp_path / "l.nii.gz"), "-o", str(dataset)]) == 2
    assert "holds 2 DICOM series" in capsys.readouterr().err
    assert _tree(dataset) == before


def test_a_case_id_holding_another_image_is_not_replaced_without_overwrite(case, tmp_path, capsys):
    """Two patients' series folders both called T2_SAG got the same case id, and the second export silently
    replaced the first patient's corrected case (and appended to its history, measured against its original)."""
    image, corrected, original, labels, _ = case
    other_array, other_labels = spine_phantom(seed=7)
    other = _sagittal(other_array)
    for patient, (img, lab) in {"p1": (image, corrected), "p2": (other, imageio.label_map_like(other_labels, other))}.items():
        (tmp_path / patient / "T2_SAG").mkdir(parents=True)
        sitk.WriteImage(img, str(tmp_path / patient / "T2_SAG" / "image.nii.gz"))
        sitk.WriteImage(lab, str(tmp_path / patient / "labels.nii.gz"))
    dataset = tmp_path / "dataset"
    annotation.export_training_case(image, corrected, dataset, "T2_SAG", original_label_map=original, model="spine-mri-2d 1.0.0")
    before = _tree(dataset)
    arguments = ["export-training", str(tmp_path / "p2" / "T2_SAG" / "image.nii.gz"), str(tmp_path / "p2" / "labels.nii.gz"),
                 "-o", str(dataset), "--case-id", "T2_SAG"]  # fmt: skip
    assert main(arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spineanalysis: error: case 'T2_SAG' in") and "holds another image" in error and "\n" not in error
    assert _tree(dataset) == before
    # the same image again is an update of that case, as before
    assert annotation.export_training_case(image, corrected, dataset, "T2_SAG").provenance["revision"] == 2
    # --overwrite replaces it as a new case: no history or model output of the other image
    assert main(arguments + ["--overwrite"]) == 0
    back = annotation.read_training_case(dataset, "T2_SAG")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), other_array)
    assert back.original is None and back.provenance["revision"] == 1 and len(back.provenance["history"]) == 1
    assert back.provenance["original_available"] is False


def test_cli_records_what_a_partial_map_annotates_and_a_reexport_keeps_it(case, tmp_path, capsys):
    """An expert map of some levels only (the shared IVD cases outline five lumbar discs) had no way to say so: every
    structure the dataset declares and the map leaves out was taken as absent. --annotated-levels records it."""
    image, _, _, labels, _ = case
    partial = np.where(np.isin(labels, [23, 123, 24]), labels, 0)  # L4, L4-L5, L5 outlined; L3 and L3-L4 in view but not
    sitk.WriteImage(image, str(tmp_path / "expert.nii.gz"))
    sitk.WriteImage(imageio.label_map_like(partial, image), str(tmp_path / "partial.nii.gz"))
    dataset = tmp_path / "dataset"
    arguments = ["export-training", str(tmp_path / "expert.nii.gz"), str(tmp_path / "partial.nii.gz"), "-o", str(dataset)]
    assert main(arguments + ["--annotated-levels", "present"]) == 0
    assert "partial map: annotates L4, L4-L5, L5 only" in capsys.readouterr().out
    assert annotation.read_training_case(dataset, "expert").provenance["annotated_labels"] == {"23": "L4", "123": "L4-L5", "24": "L5"}
    # a re-export (e.g. from Slicer, which has no such option) keeps the statement; listed levels are annotated as absent
    annotation.export_training_case(image, imageio.label_map_like(partial, image), dataset, "expert")
    assert annotation.read_training_case(dataset, "expert").provenance["annotated_labels"] == {"23": "L4", "123": "L4-L5", "24": "L5"}
    assert main(arguments + ["--annotated-levels", "present,L5-S1"]) == 0
    assert list(annotation.read_training_case(dataset, "expert").provenance["annotated_labels"].values()) == ["L4", "L4-L5", "L5", "L5-S1"]
    assert main(arguments + ["--annotated-levels", "dataset"]) == 0  # back to the default rule
    assert annotation.read_training_case(dataset, "expert").provenance["annotated_labels"] is None
    before = _tree(dataset)
    assert main(arguments + ["--annotated-levels", "L4-L6"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("spineanalysis: error: annotated level 'L4-L6': not a structure") and "\n" not in error
    assert _tree(dataset) == before
