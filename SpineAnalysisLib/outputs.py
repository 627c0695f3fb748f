"""Check where results will be written before any work starts.

A command that finds out after a minute of inference that its output cannot be written leaves the user with
a traceback and nothing else; these checks run first and only look (they create nothing):

- an output folder must not be a file, must be creatable/writable, and an existing one that holds anything
  (dot-files aside) is refused unless ``overwrite`` is set, so an earlier run's results are never replaced
  by accident;
- an output file must not be a folder, must carry one of the allowed suffixes (label maps: 3D formats only,
  :data:`LABEL_MAP_SUFFIXES`), must be writable, and an existing one is replaced only with ``overwrite``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import InputError

#: Label maps are written only in 3D formats that keep the grid (a .png or .jpg would keep one slice).
LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")


def check_output_folder(path: str | os.PathLike, overwrite: bool = False, option: str = "-o", resume_marker: str | None = None) -> Path:
    """Refuse ``path`` as an output folder when it is a file, cannot be written, or already holds results.

    ``resume_marker``: a file name (``batch.json``) that marks a folder this command resumes; such a folder is
    accepted as it is, and any other non-empty folder is refused (there is no ``--overwrite`` then).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: is a file; the output must be a folder")
    _check_writable(path, option)
    if path.is_dir() and not overwrite and not (resume_marker and (path / resume_marker).is_file()):
        existing = sorted(entry.name for entry in path.iterdir() if not entry.name.startswith("."))
        if existing:
            shown = ", ".join(existing[:4]) + (" ..." if len(existing) > 4 else "")
            remedy = (f"it is not an earlier run's output (no {resume_marker}); choose a new folder" if resume_marker
                      else "choose a new folder, or add --overwrite to replace its results")
            raise InputError(f"{option} {path}: the folder is not empty ({shown}); {remedy}")
    return path


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None, overwrite: bool = False,
                      option: str = "-o", what: str = "output", inputs: tuple = ()) -> Path:
    """Refuse ``path`` as an output file when it is a folder, has another suffix than ``suffixes``, cannot be
    written, exists (unless ``overwrite``), or is one of the command's ``inputs`` (even with ``overwrite``: the
    command would destroy what it reads)."""
    path = Path(path)
    for given in inputs:
        if given and path.is_file() and Path(given).is_file() and os.path.samefile(path, given):
            raise InputError(f"{option} {path}: is the input {given}; choose another name (it would be replaced by the {what})")
    if path.is_dir():
        example = f" (e.g. {path / ('labels' + suffixes[0])})" if suffixes == LABEL_MAP_SUFFIXES else ""
        raise InputError(f"{option} {path}: is a folder; the {what} is a file{example}")
    if suffixes and not path.name.lower().endswith(suffixes):
        why = " (a 3D format that keeps the grid)" if suffixes == LABEL_MAP_SUFFIXES else ""
        raise InputError(f"{option} {path}: the {what} must be written as {', '.join(suffixes)}{why}")
    if path.exists() and not overwrite:
        raise InputError(f"{option} {path}: exists; choose another name, or add --overwrite to replace it")
    _check_writable(path.parent, option, path)
    return path


def _check_writable(folder: Path, option: str, shown: Path | None = None) -> None:
    """The nearest existing folder at or above ``folder`` must accept a new file (probed with a temporary one)."""
    shown = shown or folder
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{option} {shown}: {existing} is a file, so no folder can be made inside it")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"{option} {shown}: cannot write in {existing} ({error.strerror or error})") from None
