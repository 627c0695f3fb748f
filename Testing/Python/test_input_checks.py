"""The checks behind the one-line refusals: file integrity, label map given as image, output paths, settings."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bad_files import SAMPLE, SAMPLE_LABELS, header_bigger_than_data, truncated_gz
from SpineAnalysisLib import imageio
from SpineAnalysisLib.errors import InputError
from SpineAnalysisLib.filecheck import check_file_data
from SpineAnalysisLib.outputs import LABEL_MAP_SUFFIXES, check_output_file, check_output_folder
from SpineAnalysisLib.settings import DEVICES, RunSettings, Subject

SHARED_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "lumbar_mri" / "images"


def test_itk_alone_reads_damaged_nifti_as_a_zero_filled_volume(tmp_path):
    """Why the check exists: without it these files come back as whole volumes."""
    for path in (truncated_gz(tmp_path / "t.nii.gz"), header_bigger_than_data(tmp_path / "h.nii.gz"), header_bigger_than_data(tmp_path / "h.nii")):
        assert sitk.ReadImage(str(path)).GetSize() == (224, 160, 64)
        with pytest.raises(InputError, match="not a readable image"):
            imageio.read_image(path)


def test_intact_files_pass_and_corrupt_streams_are_named(tmp_path):
    check_file_data(SAMPLE)
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:, :, :4], str(plain), False)
    check_file_data(plain)
    data = bytearray(gzip.compress(plain.read_bytes()))
    data[-8] ^= 0xFF  # the CRC32 of the member
    (tmp_path / "crc.nii.gz").write_bytes(bytes(data))
    with pytest.raises(InputError, match="compressed data is corrupt"):
        check_file_data(tmp_path / "crc.nii.gz")


def test_uncompressed_nifti_named_nii_gz_is_read_as_itk_reads_it(tmp_path):
    """A renamed file: ITK reads an uncompressed NIfTI named .nii.gz as it is, but the check refused it as
    "compressed data is corrupt (Not a gzipped file)". Its own length is still checked."""
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:, :, :4], str(plain), False)
    renamed = tmp_path / "renamed.nii.gz"
    renamed.write_bytes(plain.read_bytes())
    assert np.array_equal(sitk.GetArrayFromImage(imageio.read_image(renamed)), sitk.GetArrayFromImage(sitk.ReadImage(str(plain))))
    header_bigger_than_data(tmp_path / "short.nii").rename(tmp_path / "short_renamed.nii.gz")
    with pytest.raises(InputError, match="the header describes .* bytes of voxel data"):
        check_file_data(tmp_path / "short_renamed.nii.gz")


def _nifti2(voxels_in_header: int, voxels_written: int) -> bytes:
    header = bytearray(540)
    header[0:4] = struct.pack("<i", 540)
    header[4:12] = b"n+2\0\r\n\x1a\n"
    header[12:16] = struct.pack("<hh", 2, 8)  # datatype uint8, bitpix 8
    header[16:80] = struct.pack("<8q", 3, voxels_in_header, 1, 1, 1, 1, 1, 1)
    header[168:176] = struct.pack("<q", 544)
    return bytes(header) + b"\0" * 4 + b"\1" * voxels_written


def test_nifti2_header_layout(tmp_path):
    (tmp_path / "ok.nii").write_bytes(_nifti2(100, 100))
    check_file_data(tmp_path / "ok.nii")
    (tmp_path / "short.nii").write_bytes(_nifti2(100, 60))
    with pytest.raises(InputError, match="describes 100 voxels of 8 bits .* only 60 bytes"):
        check_file_data(tmp_path / "short.nii")


def _image(array: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(array)


def test_label_maps_masks_and_blank_images_are_not_scans():
    imageio.check_scan(sitk.ReadImage(str(SAMPLE)))
    for image in (sitk.ReadImage(str(SAMPLE_LABELS)), sitk.Cast(sitk.ReadImage(str(SAMPLE_LABELS)), sitk.sitkFloat32)):
        with pytest.raises(InputError, match="looks like a label map or mask, not a scan .6 distinct values.*0, 20, 21, 22, 23, 24"):
            imageio.check_scan(image)
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:6, 2:6] = 1
    with pytest.raises(InputError, match="label map or mask"):
        imageio.check_scan(_image(mask))
    with pytest.raises(InputError, match="every voxel has the same value"):
        imageio.check_scan(_image(np.zeros((4, 8, 8), np.int16)))
    # a low-contrast integer scan inside the labels' range is still a scan: its values are not all labels
    rng = np.random.default_rng(0)
    imageio.check_scan(_image(rng.integers(0, 120, (4, 16, 16)).astype(np.int16)))
    # a float scan with fractional values is a scan, whatever its range
    imageio.check_scan(_image(rng.random((4, 16, 16)).astype(np.float32) * 20))


@pytest.mark.skipif(not SHARED_IMAGES.is_dir(), reason="../shared/data/lumbar_mri not present")
def test_every_shared_mr_image_is_a_scan():
    for path in sorted(SHARED_IMAGES.glob("*.nii.gz")):
        imageio.check_scan(sitk.ReadImage(str(path)), str(path))


def test_output_folder_rules(tmp_path):
    assert check_output_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # only looked
    (tmp_path / "hidden").mkdir()
    (tmp_path / "hidden" / ".DS_Store").write_text("")
    check_output_folder(tmp_path / "hidden")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="not empty .summary.json.; choose a new folder, or add --overwrite"):
        check_output_folder(tmp_path / "run")
    check_output_folder(tmp_path / "run", overwrite=True)
    (tmp_path / "run" / "batch.json").write_text("{}")
    check_output_folder(tmp_path / "run", resume_marker="batch.json")


def test_output_file_rules(tmp_path):
    for name in ("a.nii.gz", "a.NII", "a.seg.nrrd", "a.nrrd", "a.mha", "a.mhd"):
        check_output_file(tmp_path / name, LABEL_MAP_SUFFIXES)
    for name in ("a.png", "a.jpg", "a.nii.zip", "a"):
        with pytest.raises(InputError, match="3D format"):
            check_output_file(tmp_path / name, LABEL_MAP_SUFFIXES)
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="exists"):
        check_output_file(tmp_path / "a.nii.gz", LABEL_MAP_SUFFIXES)
    check_output_file(tmp_path / "a.nii.gz", LABEL_MAP_SUFFIXES, overwrite=True)


@pytest.mark.parametrize("suffix", [".mhd", ".seg.nrrd", ".nrrd", ".mha", ".nii"])
def test_every_allowed_label_map_format_round_trips(tmp_path, suffix):
    labels = imageio.read_label_map(SAMPLE_LABELS)
    path = imageio.write_image(labels, tmp_path / f"labels{suffix}")
    back = imageio.read_label_map(path)
    assert imageio.same_grid(back, labels) and np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left, none referenced


def test_settings_check_their_ranges():
    assert Subject("female", "61").sex == "F" and Subject("female", "61").age == 61.0
    for bad in ({"age": -5}, {"age": 200}, {"age": float("nan")}, {"sex": "X"}):
        with pytest.raises(InputError):
            Subject(**bad)
    assert RunSettings(device="CPU").device == "cpu" and set(DEVICES) == {"auto", "cpu", "cuda", "mps"}
    for bad in ({"device": "tpu"}, {"threads": 0}, {"threads": 5000}):
        with pytest.raises(InputError):
            RunSettings(**bad)
