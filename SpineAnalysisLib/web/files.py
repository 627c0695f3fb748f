"""Which files the review page may read, and where uploads go.

Nothing outside ``--data-dir`` is listed or opened: every requested name is resolved (symbolic links
included) and must stay inside the resolved data folder. Uploads are size-limited and written to a private
temporary folder (mode 0700) that is removed when the server stops. Pure Python, no trame.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError
from ..imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES, has_image_suffix

#: Largest accepted upload (all files of one upload together).
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


class DataFolder:
    """The images a user may open from ``--data-dir``: files with an image suffix and DICOM series folders."""

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root).resolve(strict=True) if root else None
        if self.root is not None and not self.root.is_dir():
            raise InputError(f"--data-dir {root}: not a folder")

    def resolve(self, name: str) -> Path:
        """The real path of ``name`` (relative to the data folder); InputError when it leaves the folder."""
        if self.root is None:
            raise InputError("no --data-dir was given: only the command-line image or an upload can be opened")
        candidate = Path(name)
        if candidate.is_absolute():
            raise InputError(f"{name}: give a name inside the data folder, not an absolute path")
        path = (self.root / candidate).resolve()
        if path != self.root and self.root not in path.parents:
            raise InputError(f"{name}: outside the data folder")
        if not path.exists():
            raise InputError(f"{name}: no such file or folder in the data folder")
        return path

    def list_images(self, limit: int = 500) -> list[str]:
        """Names (relative, '/'-separated) of the images and DICOM folders inside the data folder."""
        if self.root is None:
            return []
        found: list[str] = []
        for folder, subfolders, files in os.walk(self.root, followlinks=False):
            here = Path(folder)
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            if any(f.lower().endswith(DICOM_SUFFIXES) for f in files):
                found.append(here.relative_to(self.root).as_posix() or ".")
            for name in sorted(files):
                if has_image_suffix(name) and not name.startswith("."):
                    path = here / name
                    try:
                        self.resolve(path.relative_to(self.root).as_posix())  # a link pointing outside is left out
                    except InputError:
                        continue
                    found.append(path.relative_to(self.root).as_posix())
            if len(found) >= limit:
                break
        return found[:limit]


class UploadFolder:
    """A private temporary folder holding uploaded files (created on first use, removed by :meth:`close`)."""

    def __init__(self, max_bytes: int = MAX_UPLOAD_BYTES):
        self.max_bytes = max_bytes
        self._path: Path | None = None
        self._count = 0

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="spineanalysis-review-"))  # mkdtemp: mode 0700
        return self._path

    def save(self, files: list[tuple[str, bytes]]) -> Path:
        """Write one upload (a file, or the files of one DICOM series) and return the path to open.

        Names are reduced to their last component, so an upload cannot write outside its folder.
        """
        if not files:
            raise InputError("upload: no file received")
        total = sum(len(content) for _name, content in files)
        if total > self.max_bytes:
            raise InputError(f"upload: {total / 1e6:.0f} MB is more than the limit of {self.max_bytes / 1e6:.0f} MB")
        self._count += 1
        target = self.path / f"upload-{self._count}"
        target.mkdir(mode=0o700)
        names = []
        for name, content in files:
            safe = Path(str(name).replace("\\", "/")).name
            if not safe or safe in (".", ".."):
                raise InputError(f"upload: {name!r} is not a file name")
            (target / safe).write_bytes(content)
            names.append(safe)
        if len(names) == 1 and has_image_suffix(names[0]):
            return target / names[0]
        if all(n.lower().endswith(DICOM_SUFFIXES) or "." not in n for n in names):
            return target  # a DICOM series
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise InputError(f"upload: expected one image file ({suffixes}) or the files of one DICOM series")

    def close(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None
