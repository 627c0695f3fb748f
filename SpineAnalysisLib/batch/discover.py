"""Finding the cases of a batch: a folder (searched recursively) or a CSV listing.

Folder: every file with an image suffix (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd) is a case, and every folder
that directly holds DICOM files (``.dcm``/``.ima`` or the ``DICM`` magic at byte 128) is one case (a series
folder; a folder with several series fails as one case with the reason). Hidden files and folders (``.name``)
and the output folder are skipped. ``pattern`` (fnmatch on the file or folder name) narrows the search, e.g.
``*_T2w.nii.gz``.

Case ids are stable: the path relative to INPUT without the image suffix, with ``/`` written ``__`` and any
character outside ``A-Z a-z 0-9 . _ -`` replaced by ``_`` (``sub-01/anat/T2w.nii.gz`` -> ``sub-01__anat__T2w``).
Two files that would get the same id (``a.nii`` and ``a.nii.gz``) keep their suffix (``a_nii``, ``a_nii_gz``);
names that still collide (``Müller.nii.gz`` and ``Mäller.nii.gz`` both give ``M_ller``) get the first 8 hex digits of
the SHA-1 of their relative path appended (``M_ller_nii_gz_3f2a9c1e``), so the id stays the same on every rerun.
The same id is the name of the case's output folder, so a rerun finds the case's previous outputs.

CSV: a header with ``case_id`` and ``path`` and optionally ``age`` (years) and ``sex`` (F/M); other columns are
ignored. With a ``labels`` column (and optionally ``label_scheme`` and ``bodies``, see docs/label-schemes.md), a row
whose labels cell names a label map is measured from that segmentation (any supported scheme, CT or MRI) instead
of being segmented. Relative paths are relative to the CSV's folder. A malformed listing (no such columns, a repeated or
unusable case id) is an :class:`InputError`; a bad age or sex in one row makes only that case fail (it is
recorded in errors.csv and the other cases run).
"""

from __future__ import annotations

import csv
import fnmatch
import hashlib
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError, SpineAnalysisError
from ..imageio import DICOM_SUFFIXES, has_image_suffix, strip_image_suffix
from ..label_schemes import SCHEMES
from ..measure import normative

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Case:
    case_id: str
    path: str
    age: float | None = None
    sex: str | None = None
    #: a reason why this case cannot run (bad age or sex in the CSV); it is recorded as failed
    problem: str = ""
    #: a segmentation to measure instead of segmenting (CSV columns labels, label_scheme, bodies)
    labels: str = ""
    label_scheme: str = "auto"
    bodies: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        return cls(**{key: data.get(key) for key in ("case_id", "path", "age", "sex")}, problem=data.get("problem") or "",
                   labels=data.get("labels") or "", label_scheme=data.get("label_scheme") or "auto", bodies=data.get("bodies") or "")


def safe_id(text: str) -> str:
    text = _SAFE.sub("_", text.replace("\\", "/").strip("/").replace("/", "__"))
    return text.lstrip(".") or "case"


def _is_dicom_file(path: Path) -> bool:
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    if "." in path.name and not path.name.split(".")[-1].isdigit():
        return False  # files such as notes.txt; DICOM files have no suffix or a numeric one (IM.0001)
    try:
        with open(path, "rb") as stream:
            stream.seek(128)
            return stream.read(4) == b"DICM"
    except OSError:
        return False


def discover_cases(source: str | os.PathLike, exclude: str | os.PathLike | None = None, pattern: str | None = None) -> list[Case]:
    """The cases of a folder or CSV listing, in a stable order (see the module docstring)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    if source.is_file():
        if source.suffix.lower() in (".csv", ".tsv", ".txt"):
            return read_case_list(source)
        if has_image_suffix(source):
            return [Case(safe_id(strip_image_suffix(source.name)), str(source.resolve()))]
        raise InputError(f"{source}: expected a folder of images, a CSV listing case_id,path[,age,sex] or one image")
    return _scan_folder(source, exclude, pattern)


def _scan_folder(root: Path, exclude, pattern: str | None) -> list[Case]:
    root = root.resolve()
    excluded = Path(exclude).resolve() if exclude is not None else None
    found: list[tuple[str, Path]] = []  # (relative name for the id, path)
    for folder, subfolders, files in os.walk(root, followlinks=False):
        here = Path(folder)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and (excluded is None or here / d != excluded))
        files = sorted(f for f in files if not f.startswith("."))
        relative = here.relative_to(root).as_posix()
        dicom = False
        for name in files:
            path = here / name
            if has_image_suffix(name):
                if pattern is None or fnmatch.fnmatch(name, pattern):
                    found.append(((relative + "/" if relative != "." else "") + name, path))
            elif not dicom and _is_dicom_file(path):
                dicom = True
        if dicom and (pattern is None or fnmatch.fnmatch(here.name, pattern)):
            found.append((relative if relative != "." else here.name, here))
    if not found:
        what = f" matching {pattern!r}" if pattern else ""
        raise InputError(f"{root}: no images{what} (NIfTI, NRRD, MetaImage) or DICOM series folders found")
    ids = [safe_id(strip_image_suffix(name)) for name, _ in found]
    counts: dict[str, int] = {}
    for case_id in ids:
        counts[case_id] = counts.get(case_id, 0) + 1
    ids = [safe_id(name.replace(".", "_")) if counts[case_id] > 1 else case_id for (name, _), case_id in zip(found, ids)]
    counts = {}
    for case_id in ids:
        counts[case_id] = counts.get(case_id, 0) + 1
    cases = []
    for (name, path), case_id in zip(found, ids):
        if counts[case_id] > 1:  # names that differ only in characters safe_id replaces
            case_id = f"{case_id}_{hashlib.sha1(name.encode('utf-8')).hexdigest()[:8]}"
        cases.append(Case(case_id, str(path)))
    _check_unique([c.case_id for c in cases], root)
    return sorted(cases, key=lambda c: c.case_id)


def _check_unique(ids: list[str], where) -> None:
    seen: set[str] = set()
    for case_id in ids:
        if case_id in seen:
            raise InputError(f"{where}: case id {case_id!r} occurs twice; case ids must be unique")
        seen.add(case_id)


def read_case_list(path: Path) -> list[Case]:
    """Cases of a CSV (or tab-separated) listing ``case_id,path[,age,sex]``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot be read as a text listing ({error})") from None
    sample = text[:4096]
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ","
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = {(name or "").strip().lower(): name for name in (reader.fieldnames or [])}
    if "case_id" not in columns or "path" not in columns:
        raise InputError(f"{path}: the header must name the columns case_id and path (optionally age and sex); found {', '.join(columns) or 'none'}")
    cases: list[Case] = []
    folders: dict[str, str] = {}
    for line, row in enumerate(reader, start=2):
        def cell(key: str) -> str:
            return (row.get(columns[key]) or "").strip() if key in columns else ""

        case_id, image = cell("case_id"), cell("path")
        if not case_id and not image:
            continue
        if not case_id:
            raise InputError(f"{path}:{line}: empty case_id")
        folder = safe_id(case_id)
        if folder in folders:
            other = folders[folder]
            same = "occurs twice" if other == case_id else f"and {other!r} map to the same output folder {folder!r}"
            raise InputError(f"{path}:{line}: case id {case_id!r} {same}; case ids must be unique")
        folders[folder] = case_id
        problems = []
        age = sex = None
        try:
            age = normative.check_age(cell("age") or None)
        except SpineAnalysisError as error:
            problems.append(str(error))
        try:
            sex = normative.normalise_sex(cell("sex") or None)
        except SpineAnalysisError as error:
            problems.append(str(error))
        def resolve(cell_text: str) -> str:
            if not cell_text:
                return ""
            resolved_path = Path(cell_text).expanduser()
            return str((resolved_path if resolved_path.is_absolute() else path.parent / resolved_path).resolve())

        if not image:
            problems.append("empty path")
        label_scheme = cell("label_scheme") or "auto"
        if label_scheme not in SCHEMES:
            problems.append(f"label_scheme {label_scheme!r} is not one of {', '.join(SCHEMES)}")
        if cell("bodies") and not cell("labels"):
            problems.append("bodies given without labels")
        cases.append(Case(case_id, resolve(image), age, sex, "; ".join(f"{path.name} line {line}: {p}" for p in problems),
                          resolve(cell("labels")), label_scheme, resolve(cell("bodies"))))
    if not cases:
        raise InputError(f"{path}: lists no cases")
    return cases


def case_folder(case: Case | str) -> str:
    """Name of the case's output folder under OUTDIR/cases."""
    return safe_id(case.case_id if isinstance(case, Case) else case)
