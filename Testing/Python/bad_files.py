"""Damaged image files as users meet them, made from the bundled real sample (for the refusal tests)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"
SAMPLE_LABELS = ROOT / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_labels.nii.gz"


def truncated_gz(path: Path, size: int = 5000) -> Path:
    """The first ``size`` bytes of the 2.6 MB sample: what an interrupted download leaves."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(SAMPLE.read_bytes()[:size])
    return path


def header_bigger_than_data(path: Path, slices: int = 4, claimed: int = 64) -> Path:
    """A well-formed ``.nii.gz`` (or ``.nii``) stream whose header says ``claimed`` slices but holds ``slices``:
    ITK would fill the missing slices with zeros."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_name(path.name.replace(".nii.gz", ".nii") + ".tmp.nii")
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE))[:, :, 24:24 + slices], str(plain), False)
    data = bytearray(plain.read_bytes())
    plain.unlink()
    assert struct.unpack("<h", data[46:48])[0] == slices  # dim[3] of a little-endian NIfTI-1 header
    data[46:48] = struct.pack("<h", claimed)
    path.write_bytes(gzip.compress(bytes(data)) if path.name.endswith(".gz") else bytes(data))
    return path
