"""The annotators' loop: corrected segmentations become training cases in a dataset folder.

The folder follows the nnU-Net v2 / MONAI (Medical Segmentation Decathlon) layout::

    DATASET/
      dataset.json                    labels name -> value, numTraining, file_ending, training list
      imagesTr/<case>_0000.nii.gz     the image (channel 0)
      labelsTr/<case>.nii.gz          the corrected label map (the training target)
      labelsOriginal/<case>.nii.gz    the model's own output, kept beside the correction
      provenance/<case>.json          model name/version, UTC time, per-structure changed voxels, history

Label values are those of the SpineAnalysis scheme (VerSe ids, discs 100 + vertebra above), so
``dataset.json`` holds e.g. ``{"background": 0, "L1": 20, "L1-L2": 120}``. nnU-Net's own trainer
needs consecutive values (0..N); remap before training nnU-Net itself. MONAI reads the folder as is.

Exporting a case writes all of its files into a staging folder inside DATASET first, then moves them
into place (the previous files of the same case are restored if a move fails) and finally rewrites
``dataset.json`` atomically. Re-exporting a case replaces that case only; nothing else in the folder is
touched. Re-exporting without an original keeps the original stored by an earlier export.

What a case annotates (``provenance/<case>.json`` ``annotated_labels``, read by :mod:`.finetune`): by default
(``null``) the corrected map and every structure ``dataset.json`` declares, so a declared structure the map
leaves out is taught as absent - right for a corrected model output, where the annotator saw every level. A
*partial* map (someone else's expert map that outlines only some levels, e.g. the shared IVD cases' five lumbar
discs) is exported with ``annotated_levels``: the case then annotates only the structures it holds plus those
listed (known absent), and fine-tuning leaves every other structure unknown (out of every loss term).
Re-exporting without ``annotated_levels`` keeps the earlier export's statement.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from . import __version__
from . import imageio
from . import labels as scheme
from .errors import InputError

DATASET_JSON = "dataset.json"
IMAGES_DIR = "imagesTr"
LABELS_DIR = "labelsTr"
ORIGINALS_DIR = "labelsOriginal"
PROVENANCE_DIR = "provenance"
FILE_ENDING = ".nii.gz"
CHANNEL_SUFFIX = "_0000"
CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: DICOM identifiers kept in the provenance (never the patient's ID or name).
PROVENANCE_DICOM_KEYS = {tag: name for name, tag in imageio.DICOM_IDENTIFIER_TAGS.items() if name != "PatientID"}


@dataclass
class ExportResult:
    case_id: str
    dataset_dir: Path
    files: dict[str, Path]
    provenance: dict
    replaced: bool  # the case existed before and was updated in place


@dataclass
class ExportedCase:
    """A case read back from a dataset folder (see :func:`read_training_case`)."""

    case_id: str
    image: sitk.Image
    labels: sitk.Image
    original: sitk.Image | None
    provenance: dict
    names: dict[int, str] = field(default_factory=dict)  # label value -> structure name in this case


def case_file_paths(dataset_dir: str | os.PathLike, case_id: str) -> dict[str, Path]:
    dataset_dir = Path(dataset_dir)
    return {
        "image": dataset_dir / IMAGES_DIR / f"{case_id}{CHANNEL_SUFFIX}{FILE_ENDING}",
        "labels": dataset_dir / LABELS_DIR / f"{case_id}{FILE_ENDING}",
        "original": dataset_dir / ORIGINALS_DIR / f"{case_id}{FILE_ENDING}",
        "provenance": dataset_dir / PROVENANCE_DIR / f"{case_id}.json",
    }


def check_case_id(case_id: str) -> str:
    case_id = (case_id or "").strip()
    if not CASE_ID_PATTERN.fullmatch(case_id):
        raise InputError(
            f"case id {case_id!r}: use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return case_id


def case_id_from_path(path: str | os.PathLike) -> str:
    """A case id from an image file or DICOM folder name ("sub-01_T2w.nii.gz" -> "sub-01_T2w")."""
    name = imageio.strip_image_suffix(Path(os.path.normpath(os.fspath(path))).name)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return check_case_id(name or "case")


def case_segment_names(labels_present) -> dict[int, str]:
    """Name of each label in one case; a disc is named after the vertebra actually below it
    (124 above an L6 is "L5-L6", 119 above a T13 is "T12-T13")."""
    present = {int(v) for v in labels_present if int(v) != 0}
    names = {}
    for label in sorted(present):
        if scheme.is_disc(label):
            above = scheme.vertebra_above_disc(label)
            below = None
            if above == 24 and 25 in present:
                below = 25
            elif above == 19 and 28 in present:
                below = 28
            try:
                names[label] = scheme.disc_name(label, below)
            except ValueError:
                names[label] = scheme.structure_name(label)
        else:
            names[label] = scheme.structure_name(label)
    return names


#: ``annotated_levels``: the case annotates only the structures its map holds (a partial map).
ONLY_PRESENT = "present"
#: ``annotated_levels``: back to the default rule (the map and every structure dataset.json declares).
DATASET_RULE = "dataset"


def annotated_label_names(spec, present: set[int], previous, names: dict[int, str]) -> dict[int, str] | None:
    """What a case annotates, as label value -> name, or None for the default rule (see the module docstring).

    ``spec``: None (keep ``previous``, the earlier export's statement), ``"present"`` (only the structures in the
    map), ``"dataset"`` (the default rule) or structure names / label values, as a list or one comma-separated
    text ("L1-L2,L5-S1" or "present,T12-L1"), annotated besides those present (a listed one that the map lacks is
    known absent). ``names``: the case's structure names by value.
    """
    if spec is None:
        if not isinstance(previous, dict):
            return None
        listed = {int(value) for value in previous}
    else:
        items = [item.strip() for item in spec.split(",")] if isinstance(spec, str) else list(spec)
        items = [item for item in items if item != ""]
        if items == [DATASET_RULE]:
            return None
        listed = set()
        for item in items:
            if item == ONLY_PRESENT:
                continue
            listed.add(_structure_value(item))
    labels = listed | set(present)
    return {value: names.get(value) or scheme.structure_name(value) for value in sorted(labels, key=scheme.anatomical_rank)}


def _structure_value(item) -> int:
    """A label value of the scheme from a name ("L4-L5") or a value."""
    if isinstance(item, str) and not item.isdigit():
        try:
            return scheme.label_from_name(item)
        except ValueError:
            raise InputError(
                f"annotated level {item!r}: not a structure of the label scheme (give names such as L4, L4-L5, or "
                f"'{ONLY_PRESENT}' or '{DATASET_RULE}')"
            ) from None
    value = int(item)
    if not scheme.is_known(value):
        raise InputError(f"annotated level {value}: not a label value of the SpineAnalysis scheme")
    return value


def _as_image(item, what: str) -> sitk.Image:
    if isinstance(item, sitk.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        return imageio.read_image(item)
    raise InputError(f"{what}: expected an image or a path, got {type(item).__name__}")


def _check_original(original: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """The model output may be empty (the model found nothing), but it must be on the grid and in the scheme."""
    if not imageio.same_grid(original, reference):
        raise InputError(
            f"original label map and image are on different grids ({imageio.describe_grid(original)} vs "
            f"{imageio.describe_grid(reference)})"
        )
    array = sitk.GetArrayFromImage(original)
    if array.max(initial=0) == 0 and array.min(initial=0) == 0:
        return array.astype(np.uint8)
    return imageio.check_label_map(original, reference, what="original label map")


def split_model_text(text: str) -> tuple[str, str | None]:
    """("name", "version") of "name 1.0.0" or "name@1.0.0"; the version is None for a bare name."""
    text = text.strip()
    for separator in ("@", " "):
        if separator in text:
            name, version = text.split(separator, 1)
            return name.strip(), version.strip()
    return text, None


def _model_description(model: Any) -> dict | None:
    """``ModelInfo`` (name, version, sha256), a dict, or a string ("name 1.0.0" / "name@1.0.0")."""
    if model is None or model == "":
        return None
    if isinstance(model, dict):
        return {k: model[k] for k in ("name", "version", "sha256", "folder") if k in model}
    if isinstance(model, str):
        name, version = split_model_text(model)
        return {"name": name, "version": version}
    name = getattr(model, "name", None)
    if name is None:
        raise InputError(f"model: expected a ModelInfo, dict or string, got {type(model).__name__}")
    manifest = getattr(model, "manifest", {}) or {}
    description = {"name": name, "version": getattr(model, "version", None)}
    if manifest.get("sha256"):
        description["sha256"] = manifest["sha256"]
    return description


def segment_changes(corrected: np.ndarray, original: np.ndarray | None, names: dict[int, str]) -> dict[str, dict]:
    """Per structure: voxels in the original, in the correction, and voxels whose membership changed."""
    corrected = np.asarray(corrected).ravel()
    corrected_counts = np.bincount(corrected.astype(np.int64), minlength=256)
    if original is None:
        return {
            names.get(int(label), scheme.structure_name(int(label))): {"label": int(label), "corrected_voxels": int(corrected_counts[label])}
            for label in np.flatnonzero(corrected_counts) if label != 0
        }
    original = np.asarray(original).ravel().astype(np.int64)
    original_counts = np.bincount(original, minlength=256)
    differs = original != corrected
    changed = np.bincount(original[differs], minlength=256) + np.bincount(corrected[differs].astype(np.int64), minlength=256)
    result = {}
    size = max(len(original_counts), len(corrected_counts), len(changed))
    for label in range(1, size):
        before = int(original_counts[label]) if label < len(original_counts) else 0
        after = int(corrected_counts[label]) if label < len(corrected_counts) else 0
        if not before and not after:
            continue
        count = int(changed[label]) if label < len(changed) else 0
        status = "added" if not before else "removed" if not after else "edited" if count else "unchanged"
        name = names.get(label) or scheme.structure_name(label)
        result[name] = {"label": label, "original_voxels": before, "corrected_voxels": after, "changed_voxels": count, "status": status}
    return result


def read_dataset_json(dataset_dir: str | os.PathLike) -> dict | None:
    path = Path(dataset_dir) / DATASET_JSON
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not readable JSON ({error}); fix or move it, SpineAnalysis will not overwrite it") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a dataset.json (a JSON object is expected)")
    return data


def declared_labels(dataset: dict | None) -> dict[str, int]:
    """``labels`` of a dataset.json (name -> value); region-based entries (lists) are refused."""
    labels = (dataset or {}).get("labels", {}) or {}
    result = {}
    for name, value in labels.items():
        if not isinstance(value, int):
            raise InputError(f"dataset.json: label {name!r} = {value!r}; only one integer value per label is supported")
        result[str(name)] = value
    return result


def _merged_labels(existing: dict[str, int], present: set[int]) -> dict[str, int]:
    by_value: dict[int, str] = {}
    for name, value in existing.items():
        if value == 0:
            continue
        if not scheme.is_known(value):
            raise InputError(f"dataset.json declares {name!r} = {value}, which is not a SpineAnalysis scheme label; use a new dataset folder")
        expected = scheme.structure_name(value)
        try:
            same = scheme.label_from_name(name) == value
        except ValueError:
            same = False
        if not same:
            raise InputError(
                f"dataset.json declares {name!r} = {value}, but SpineAnalysis exports {expected!r} = {value}; use a new dataset folder"
            )
        by_value[value] = name
    for value in present:
        by_value.setdefault(int(value), scheme.structure_name(int(value)))
    ordered = sorted(by_value, key=lambda v: (not (scheme.is_vertebra(v) or scheme.is_disc(v)), scheme.anatomical_rank(v) if (scheme.is_vertebra(v) or scheme.is_disc(v)) else v))
    return {"background": 0, **{by_value[v]: v for v in ordered}}


def list_cases(dataset_dir: str | os.PathLike) -> list[str]:
    """Case ids that have both an image and a corrected label map."""
    dataset_dir = Path(dataset_dir)
    folder = dataset_dir / LABELS_DIR
    if not folder.is_dir():
        return []
    cases = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(FILE_ENDING):
            continue
        case_id = path.name[: -len(FILE_ENDING)]
        if case_file_paths(dataset_dir, case_id)["image"].exists():
            cases.append(case_id)
    return cases


def _dataset_json(dataset_dir: Path, existing: dict | None, present: set[int], extra_case: str) -> dict:
    data = dict(existing or {})
    cases = sorted(set(list_cases(dataset_dir)) | {extra_case})
    data.setdefault("name", dataset_dir.name)
    data.setdefault("description", "Lumbar spine MRI with vertebrae and discs corrected by annotators in SpineAnalysis")
    data.setdefault("channel_names", {"0": "MRI"})
    data["labels"] = _merged_labels(declared_labels(existing), present)
    data["numTraining"] = len(cases)
    data["file_ending"] = FILE_ENDING
    data["label_scheme"] = "SpineAnalysis / VerSe: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 S1, 28 T13; disc = 100 + vertebra above; 60 cord, 61 canal"
    data["training"] = [
        {"image": f"./{IMAGES_DIR}/{c}{CHANNEL_SUFFIX}{FILE_ENDING}", "label": f"./{LABELS_DIR}/{c}{FILE_ENDING}"} for c in cases
    ]
    data["originals_folder"] = ORIGINALS_DIR
    data["provenance_folder"] = PROVENANCE_DIR
    return data


def _prepare_folder(dataset_dir: Path) -> None:
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{dataset_dir}: cannot create the dataset folder ({error.strerror or error})") from None
    if not dataset_dir.is_dir():
        raise InputError(f"{dataset_dir}: is not a folder")
    if not os.access(dataset_dir, os.W_OK | os.X_OK):
        raise InputError(f"{dataset_dir}: the dataset folder is not writable")


def export_training_case(
    image,
    corrected_label_map,
    dataset_dir: str | os.PathLike,
    case_id: str | None = None,
    original_label_map=None,
    model: Any = None,
    annotator: str | None = None,
    names: dict[int, str] | None = None,
    image_path: str | os.PathLike | None = None,
    note: str | None = None,
    overwrite: bool = False,
    annotated_levels=None,
) -> ExportResult:
    """Write one corrected case into ``dataset_dir`` (created when missing).

    ``image`` and the label maps are SimpleITK images or paths; the label maps must be on the image's
    grid and hold scheme labels only. ``original_label_map`` is the model's output before correction;
    ``model`` names the model that produced it (``ModelInfo``, dict or "name version"). ``names`` overrides
    the structure name of a label value in this case (e.g. segment names from Slicer).
    Re-exporting a case of the same image updates it (its history and original are kept). A case id that already
    holds *another* image (two series folders both called "T2_SAG") is refused unless ``overwrite``, which replaces
    that case as a new one (its history and original dropped). ``annotated_levels`` says what a partial map
    annotates (:func:`annotated_label_names`; recorded as the provenance's ``annotated_labels``).
    Raises :class:`InputError` (nothing written) for a missing/empty segmentation, a grid mismatch, an
    unwritable folder, a case id taken by another image or a dataset.json that is not SpineAnalysis-compatible.
    """
    if corrected_label_map is None:
        raise InputError("there is no segmentation to export: segment or load a label map first")
    if image is None:
        raise InputError("there is no image to export: select the input volume")
    if image_path is None and isinstance(image, (str, os.PathLike)):
        image_path = image
    image = _as_image(image, "image")
    corrected = _as_image(corrected_label_map, "corrected label map")
    if case_id is None:
        if image_path is None:
            raise InputError("a case id is needed (the image has no file name to derive one from)")
        case_id = case_id_from_path(image_path)
    case_id = check_case_id(case_id)
    corrected_array = imageio.check_label_map(corrected, image, what="corrected label map")
    original_array = _check_original(_as_image(original_label_map, "original label map"), image) if original_label_map is not None else None

    dataset_dir = Path(dataset_dir).expanduser()
    _prepare_folder(dataset_dir)
    existing = read_dataset_json(dataset_dir)
    present = {int(v) for v in np.unique(corrected_array) if v}
    dataset = _dataset_json(dataset_dir, existing, present, case_id)  # validates an existing dataset.json before writing

    paths = case_file_paths(dataset_dir, case_id)
    replaced = paths["labels"].exists() or paths["image"].exists()
    other_image = _holds_another_image(paths["image"], image)
    if other_image and not overwrite:
        raise InputError(
            f"case {case_id!r} in {dataset_dir} holds another image ({other_image}); give this one another case id "
            "(--case-id), or replace that case (--overwrite)"
        )
    previous = {}
    if paths["provenance"].exists() and not other_image:
        try:
            previous = json.loads(paths["provenance"].read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
    if original_array is None and paths["original"].exists() and not other_image:
        # keep the model output of an earlier export: the changes are still measured against it
        original_array = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["original"])))
        if original_array.shape != corrected_array.shape:
            original_array = None
        original_model = previous.get("model")
        original_from = "earlier export"
    else:
        original_model = _model_description(model)
        original_from = "this export" if original_array is not None else None

    case_names = case_segment_names(present | (set(np.unique(original_array).tolist()) if original_array is not None else set()))
    case_names.update({int(k): str(v) for k, v in (names or {}).items()})
    annotates = annotated_label_names(annotated_levels, present, previous.get("annotated_labels"), case_names)
    changes = segment_changes(corrected_array, original_array, case_names)
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    edited = [name for name, item in changes.items() if item.get("status") in ("edited", "added", "removed")]
    revision = int(previous.get("revision", 0)) + 1
    history = list(previous.get("history", []))
    history.append({"revision": revision, "exported_utc": now, "edited_structures": edited, "annotator": annotator})
    source = {PROVENANCE_DICOM_KEYS[key]: image.GetMetaData(key) for key in PROVENANCE_DICOM_KEYS if image.HasMetaDataKey(key)}
    if image_path is not None:
        source["path"] = os.fspath(image_path)
    provenance = {
        "case_id": case_id,
        "exported_utc": now,
        "first_exported_utc": previous.get("first_exported_utc", now),
        "revision": revision,
        "software": f"SpineAnalysis {__version__}",
        "annotator": annotator,
        "note": note,
        "model": original_model,
        "original_available": original_array is not None,
        "original_from": original_from,
        "source_image": source,
        "image_grid": {"size": list(image.GetSize()), "spacing_mm": [round(s, 6) for s in image.GetSpacing()]},
        "segments": changes,
        "segment_names": {str(k): v for k, v in sorted(case_names.items()) if k in present},
        # None: the map and every structure dataset.json declares; else only these (a partial map, others unknown)
        "annotated_labels": None if annotates is None else {str(k): v for k, v in annotates.items()},
        "edited_structures": edited,
        "changed_voxels_total": int(sum(item.get("changed_voxels", 0) for item in changes.values())),
        "files": {key: str(path.relative_to(dataset_dir)) for key, path in paths.items() if key != "original" or original_array is not None},
        "history": history,
    }

    # 1. everything into a staging folder inside the dataset (same file system: renames are atomic)
    staging = Path(tempfile.mkdtemp(prefix=f".export-{case_id}-", dir=dataset_dir))
    installed: list[Path] = []
    backups: list[tuple[Path, Path]] = []
    try:
        staged = {
            "image": staging / paths["image"].name,
            "labels": staging / paths["labels"].name,
            "provenance": staging / paths["provenance"].name,
        }
        sitk.WriteImage(image, str(staged["image"]), True)
        sitk.WriteImage(imageio.label_map_like(corrected_array, image) if corrected_array.max() > 255 else _uint8_like(corrected_array, image), str(staged["labels"]), True)
        if original_label_map is not None:
            staged["original"] = staging / ("original-" + paths["original"].name)
            sitk.WriteImage(_uint8_like(original_array, image), str(staged["original"]), True)
        staged["provenance"].write_text(json.dumps(provenance, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        # 2. move into place, keeping the previous files of this case until all moves succeeded
        backup_dir = staging / "previous"
        backup_dir.mkdir()
        if other_image and "original" not in staged and paths["original"].exists():
            # the model output of the replaced image does not belong to this one
            os.replace(paths["original"], backup_dir / f"original-{paths['original'].name}")
            backups.append((paths["original"], backup_dir / f"original-{paths['original'].name}"))
        for key, source_path in staged.items():
            target = paths[key]
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                backup = backup_dir / f"{key}-{target.name}"
                os.replace(target, backup)
                backups.append((target, backup))
            os.replace(source_path, target)
            installed.append(target)
        # 3. dataset.json last (atomic)
        imageio.write_text(json.dumps(dataset, indent=1, ensure_ascii=False) + "\n", dataset_dir / DATASET_JSON)
    except BaseException as error:
        for target in installed:
            try:
                target.unlink()
            except OSError:
                pass
        for target, backup in backups:
            try:
                os.replace(backup, target)
            except OSError:
                pass
        _remove_empty_folders(dataset_dir)
        if isinstance(error, OSError):
            raise InputError(f"{dataset_dir}: the case could not be written ({error.strerror or error}); nothing was changed") from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = {key: paths[key] for key in ("image", "labels", "original", "provenance") if paths[key].exists()}
    files["dataset_json"] = dataset_dir / DATASET_JSON
    return ExportResult(case_id, dataset_dir, files, provenance, replaced)


def _holds_another_image(stored_path: Path, image: sitk.Image) -> str | None:
    """Why the image stored for a case is not ``image`` (another grid or other voxels); None when it is the same or
    there is none."""
    if not stored_path.exists():
        return None
    try:
        stored = sitk.ReadImage(str(stored_path))
    except RuntimeError:
        return "an unreadable image"
    if not imageio.same_grid(stored, image):
        return imageio.describe_grid(stored)
    if not np.array_equal(sitk.GetArrayViewFromImage(stored), sitk.GetArrayViewFromImage(image)):
        return "other voxel values on the same grid"
    return None


def _uint8_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    result = sitk.GetImageFromArray(np.asarray(array, dtype=np.uint8))
    result.CopyInformation(reference)
    return result


def _remove_empty_folders(dataset_dir: Path) -> None:
    for name in (IMAGES_DIR, LABELS_DIR, ORIGINALS_DIR, PROVENANCE_DIR):
        folder = dataset_dir / name
        try:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        except OSError:
            pass


def read_training_case(dataset_dir: str | os.PathLike, case_id: str) -> ExportedCase:
    """Read an exported case back (to review or re-edit it): image, corrected labels, original, provenance."""
    paths = case_file_paths(dataset_dir, check_case_id(case_id))
    for key in ("image", "labels"):
        if not paths[key].exists():
            raise InputError(f"{paths[key]}: missing; case {case_id!r} is not in {dataset_dir}")
    image = imageio.read_image(paths["image"])
    labels = imageio.read_label_map(paths["labels"], reference=image)
    original = None
    if paths["original"].exists():
        original = sitk.Cast(imageio.read_image(paths["original"]), sitk.sitkUInt16)
    provenance = json.loads(paths["provenance"].read_text(encoding="utf-8")) if paths["provenance"].exists() else {}
    present = {int(v) for v in np.unique(sitk.GetArrayViewFromImage(labels)) if v}
    names = case_segment_names(present)
    names.update({int(k): v for k, v in provenance.get("segment_names", {}).items() if int(k) in present})
    return ExportedCase(case_id, image, labels, original, provenance, names)


def edited_structures(corrected: np.ndarray, original: np.ndarray | None, names: dict[int, str]) -> list[str] | None:
    """Names of the structures whose voxels differ between the model's output and the correction (added,
    removed or edited); None when there is no original to compare with."""
    if original is None:
        return None
    return [name for name, change in segment_changes(corrected, original, names).items() if change["status"] != "unchanged"]
