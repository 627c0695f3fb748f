"""Check that an image file holds the voxels its header promises, before it is read as a volume.

ITK's NIfTI reader fills whatever a file lacks with zeros: a truncated ``.nii.gz`` (a partial download, the
first 5 kB of a 2.6 MB file) or a ``.nii`` whose header describes more voxels than follow it comes back as a
whole, mostly black volume, which the pipeline would then analyse ("no vertebrae found", exit 0). NRRD and
MetaImage readers already raise on short data, so only NIfTI needs this check:

- a gzip-compressed file (told by its first two bytes, as ITK tells it: an uncompressed NIfTI renamed to
  ``.nii.gz`` is read as it is) must decompress to the end of its stream, with the CRC and length of every member
  matching (Python's :mod:`gzip` verifies both);
- the data after the header's ``vox_offset`` must hold at least ``prod(dim[1..dim[0]]) * bitpix / 8`` bytes
  (NIfTI-1 and NIfTI-2 header layouts, either byte order; https://nifti.nimh.nih.gov/nifti-1 and
  https://nifti.nimh.nih.gov/nifti-2).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

from .errors import InputError

_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


def check_file_data(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` when a NIfTI file is truncated, its compressed stream corrupt, or its data
    shorter than its header says. Other formats are left to their readers, which raise by themselves."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii.gz", ".nii")):
        return
    with open(path, "rb") as stream:
        header = stream.read(540)
    size = path.stat().st_size
    # by content, not by name: ITK reads an uncompressed NIfTI named .nii.gz (a renamed file) as it is
    if header[:2] == _GZIP_MAGIC or (name.endswith(".gz") and not _nifti_bytes(header)):
        header, size = _read_gzip(path)
    expected = _nifti_bytes(header)
    if expected is not None and size < expected[0]:
        needed, offset, voxels, bitpix = expected
        raise InputError(
            f"{path}: not a readable image: the header describes {voxels} voxels of {bitpix} bits ({needed - offset} bytes after offset {offset}), "
            f"but the file holds only {max(size - offset, 0)} bytes of voxel data (truncated or damaged file)"
        )


def _read_gzip(path: Path) -> tuple[bytes, int]:
    """First 540 bytes and the length of the decompressed data, reading the whole stream to its end."""
    size = 0
    header = b""
    try:
        with gzip.open(path, "rb") as stream:
            while True:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                if len(header) < 540:
                    header += chunk[: 540 - len(header)]
                size += len(chunk)
    except EOFError:
        raise InputError(f"{path}: not a readable image: the compressed data ends early (truncated file, e.g. an interrupted download or copy)") from None
    except (gzip.BadGzipFile, zlib.error) as error:
        raise InputError(f"{path}: not a readable image: the compressed data is corrupt ({error})") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    return header, size


def _nifti_bytes(header: bytes) -> tuple[int, int, int, int] | None:
    """``(bytes the file needs, vox_offset, voxels, bitpix)`` from a single-file NIfTI-1/2 header; None when
    the header is not one (the reader will say what is wrong)."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348 and header[344:347] == b"n+1":
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540 and header[4:7] == b"n+2":
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or any(d < 1 for d in dims[1 : dims[0] + 1]):
        return None
    voxels = 1
    for d in dims[1 : dims[0] + 1]:
        voxels *= d
    return offset + (voxels * bitpix + 7) // 8, offset, voxels, bitpix
