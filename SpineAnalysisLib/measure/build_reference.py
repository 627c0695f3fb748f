"""Build ``reference_healthy.json``: this engine's DHI, HDR, delta SI and Pfirrmann criteria on healthy volunteers.

    python -m SpineAnalysisLib.measure.build_reference [--data DIR] [--predictions DIR] [--output FILE]

Data: the project's shared lumbar MRI set (``../shared/data/lumbar_mri``; its README and manifest.csv), healthy
volunteers only (manifest column ``pathology``): MyoSegmenTUM (VB3, water-fat gradient echo, L1-L5 bodies),
Chu et al. (VB2, T2 TSE, T11-L5 bodies), the healthy Siegen subject DzZ (VB1_11, T2 TSE, T10-S1 bodies; its T1
series VB1_10 is the same subject and is skipped) and Menezes-Reis et al. (IVD, T2 FSE, expert discs
L1-L2 to L5-S1 without vertebrae). Cases that are held out of the shared folder are not used, nor is VB3_02
(the bundled sample).

Two references (see :mod:`.normative`):

* ``expert``: the expert labels; for the vertebra-only data sets the disc is the space between two consecutive
  expert bodies (``model.dataset.add_pseudo_discs``, as in training). DHI and HDR need both bounding bodies,
  so the disc-only IVD cases contribute only delta SI and the Pfirrmann criteria;
* ``model``: the shipped model's own segmentation of the same images (``--predictions DIR`` reuses files
  ``DIR/<case_id>.nii.gz`` written by ``spineanalysis segment``; missing ones are segmented now, about
  30 s each on one CPU thread). A case is used only when every expert-labelled structure overlaps mostly the
  predicted structure of the same name (levels agree).

Signal measures (delta SI, Pfirrmann criteria) only from T2-weighted series (manifest column ``sequence``).
Statistics per parameter and level: mean, SD (n - 1), n discs, number of volunteers, count per data set.
The 49 label-only IVD maps are not used: without vertebrae there is no DHI, and their HDR would follow the expert
disc outline, a different (about 5 mm thinner) way of drawing the disc than either reference.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from . import disc as disc_module
from . import inputs, normative, pfirrmann
from .sections import Spine

#: cases left out: VB1_10 is the T1 series of subject DzZ (VB1_11 its T2, not counted twice); VB3_02 is the
#: bundled sample (Resources/Samples), left out so that the demo is scored against volunteers other than itself
SKIP = {"VB1_10", "VB3_02"}
PARAMETERS = normative.PARAMETERS
FEATURES = ("nucleus", "annulus", "contrast", "inhomogeneity")


def healthy_cases(data_dir: Path) -> list[dict]:
    """Manifest rows of the shared healthy image cases."""
    rows = []
    with open(Path(data_dir) / "manifest.csv", newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            if row["split"] != "shared" or row["kind"] != "image+labels" or row["case_id"] in SKIP:
                continue
            pathology = row["pathology"].lower()
            if pathology.startswith("none") or "healthy" in pathology:
                rows.append(row)
    return rows


def is_t2(row: dict) -> bool:
    return "T2" in row["sequence"]


def expert_label_map(data_dir: Path, row: dict) -> sitk.Image:
    """The expert labels, with the disc space between consecutive expert bodies filled as disc; a structure listed
    in ``model.dataset.KNOWN_LABEL_ERRORS`` is left out (and so are the disc spaces it would bound)."""
    from ..model.dataset import KNOWN_LABEL_ERRORS, MAX_PSEUDO_DISC_GAP_MM, add_pseudo_discs
    from ..model.preprocessing import sagittal_frame

    labels = sitk.ReadImage(str(Path(data_dir) / row["label_file"]))
    wrong = KNOWN_LABEL_ERRORS.get(row["case_id"], ())
    annotated = {int(item.split(":")[0]) for item in row["label_values_present"].split()} - set(wrong)
    if not any(scheme.is_vertebra(v) for v in annotated):
        return labels
    frame = sagittal_frame(labels)
    array = frame.to_canonical(sitk.GetArrayFromImage(labels).astype(np.int32))
    array[np.isin(array, wrong)] = 0
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(array))  # labelled part only: much faster
    crop = np.ascontiguousarray(array[box])
    add_pseudo_discs(crop, annotated, int(MAX_PSEUDO_DISC_GAP_MM / frame.spacing[1]))
    array[box] = crop
    result = sitk.GetImageFromArray(frame.from_canonical(array).astype(np.uint8))
    result.CopyInformation(labels)
    return result


def levels_agree(expert: sitk.Image, predicted: sitk.Image) -> tuple[bool, str]:
    """Every expert structure's voxels are mostly predicted as the same label."""
    e = sitk.GetArrayViewFromImage(expert)
    p = sitk.GetArrayViewFromImage(predicted)
    for label in (int(v) for v in np.unique(e) if v):
        values, counts = np.unique(p[e == label], return_counts=True)
        best = int(values[np.argmax(counts)])
        if best != label:
            return False, f"expert {scheme.structure_name(label)} predicted mostly as {scheme.structure_name(best) if best else 'background'}"
    return True, ""


def measure_discs(image: sitk.Image | None, label_map: sitk.Image, signal: bool, masks: str = "model") -> list[tuple[str, str, float]]:
    """(level, parameter, value) of every disc: DHI, HDR, delta SI, the Pfirrmann criteria and estimate."""
    spine = Spine(inputs.load(image if signal else None, label_map))
    out = []
    for label in spine.discs():
        level = spine.disc_name(label)
        rows = disc_module.rows(spine, label, masks=masks)
        notes = {parameter: note for parameter, _, _, note, *_ in rows}
        for parameter, value, *_ in rows:
            if not normative.measured_as_reference(parameter, notes["dh_bianque"]):
                continue  # the reference measures DH between the vertebral bodies only (normative.BETWEEN_BODIES)
            if (parameter in PARAMETERS or parameter == "pfirrmann_estimate") and value is not None:
                out.append((level, parameter, float(value)))
        if signal:
            features = disc_module.signal_criteria(spine, label)[0]
            if features is not None:
                out += [(level, name, float(getattr(features, name))) for name in FEATURES]
    return out


def collect(data_dir: Path, masks: str, predictions: Path | None = None, log=print, segment: bool = True) -> list[dict]:
    """One row per measured value: subject, source, case, level, parameter, value.

    With ``segment=False`` the model reference uses only the cases already segmented in ``predictions``."""
    rows = []
    for row in healthy_cases(data_dir):
        if masks == "model" and not segment and not (predictions and (Path(predictions) / f"{row['case_id']}.nii.gz").is_file()):
            log(f"{row['case_id']}: not segmented yet, left out")
            continue
        signal = is_t2(row)
        image = sitk.ReadImage(str(Path(data_dir) / row["image_file"])) if signal or masks == "model" else None
        if masks == "expert":
            label_map = expert_label_map(data_dir, row)
        else:
            label_map = _prediction(image, row["case_id"], predictions, log)
            ok, why = levels_agree(sitk.ReadImage(str(Path(data_dir) / row["label_file"])), label_map)
            if not ok:
                log(f"{row['case_id']}: skipped ({why})")
                continue
        has_bodies = any(scheme.is_vertebra(int(item.split(":")[0])) for item in row["label_values_present"].split())
        for level, parameter, value in measure_discs(image, label_map, signal, masks):
            if masks == "expert" and not has_bodies and parameter in ("dhi", "hdr"):
                continue  # expert disc outline without bodies: another way of drawing the disc (module docstring)
            rows.append({"subject": row["subject_group"], "source": row["case_id"].split("_")[0], "case": row["case_id"],
                         "level": level, "parameter": parameter, "value": value})
    return rows


def _prediction(image: sitk.Image, case_id: str, predictions: Path | None, log) -> sitk.Image:
    path = Path(predictions) / f"{case_id}.nii.gz" if predictions else None
    if path is not None and path.is_file():
        return sitk.ReadImage(str(path))
    from ..inference import segment_image

    log(f"{case_id}: segmenting")
    result = segment_image(image)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(result.label_map, str(path), True)
    return result.label_map


def summarise(rows: list[dict]) -> dict:
    """Per parameter and level: mean, sd, n, subjects, by_source; plus the Pfirrmann thresholds."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["parameter"], r["level"])].append(r)
    parameters: dict = {}
    for (parameter, level), items in sorted(groups.items()):
        if parameter not in PARAMETERS:
            continue
        values = np.array([r["value"] for r in items])
        by_source = defaultdict(int)
        for r in items:
            by_source[r["source"]] += 1
        parameters.setdefault(parameter, {})[level] = {
            "mean": round(float(values.mean()), 6),
            "sd": round(float(values.std(ddof=1)), 6) if len(values) > 1 else None,
            "n": len(values),
            "subjects": len({r["subject"] for r in items}),
            "by_source": dict(sorted(by_source.items())),
        }
    features = {name: np.array([r["value"] for r in rows if r["parameter"] == name]) for name in FEATURES}
    thresholds = None
    if len(features["nucleus"]) >= normative.MIN_N:
        thresholds = {
            "nucleus_p2_5": round(float(np.percentile(features["nucleus"], 2.5)), 4),
            "nucleus_sd": round(float(features["nucleus"].std(ddof=1)), 4),
            "contrast_p2_5": round(float(np.percentile(features["contrast"], 2.5)), 4),
            "contrast_sd": round(float(features["contrast"].std(ddof=1)), 4),
            "annulus_median": round(float(np.median(features["annulus"])), 4),
            "inhomogeneity_median": round(float(np.median(features["inhomogeneity"])), 4),
            "inhomogeneity_sd": round(float(features["inhomogeneity"].std(ddof=1)), 4),
            "n_discs": int(len(features["nucleus"])),
            "n_subjects": len({r["subject"] for r in rows if r["parameter"] == "nucleus"}),
        }
    return {"parameters": parameters, "pfirrmann": thresholds}


def leave_one_subject_out(rows: list[dict]) -> dict[str, list[float]]:
    """z-scores of every value row against a reference built from the *other* subjects (per parameter)."""
    z_by_parameter = defaultdict(list)
    for subject in sorted({r["subject"] for r in rows}):
        reference = summarise([r for r in rows if r["subject"] != subject])["parameters"]
        for r in rows:
            if r["subject"] != subject or r["parameter"] not in PARAMETERS:
                continue
            entry = reference.get(r["parameter"], {}).get(r["level"])
            if entry and entry["n"] >= normative.MIN_N:
                z_by_parameter[r["parameter"]].append((r["value"] - entry["mean"]) / entry["sd"])
    return dict(z_by_parameter)


NAMES = {
    "model": "SpineAnalysis healthy reference v1 (model masks)",
    "expert": "SpineAnalysis healthy reference v1 (expert masks)",
}
DESCRIPTIONS = {
    "model": "this engine on the shipped model's segmentations of the shared healthy volunteers (levels checked against the expert labels)",
    "expert": "this engine on the expert labels of the shared healthy volunteers (disc = space between consecutive expert vertebral bodies where only bodies are labelled)",
}


#: what the shared data say about the volunteers' age and sex
AGE_SEX = ("not recorded per subject in the shared data; pooled. Sources: MyoSegmenTUM 54 healthy Caucasian subjects "
           "(Burian et al. 2019), Menezes-Reis et al. 2016 asymptomatic young adults, Chu et al. 2015 and the Siegen "
           "subject: not stated")


def unseen_scan_check(model_rows: list[dict], expert_rows: list[dict], split: dict[str, str]) -> dict:
    """Model - expert DHI of the same discs (relative to expert), per split of the model (train / validation).

    Whether the model draws the scans it did not train on like its training cases (docs/degeneration.md)."""
    expert = {(r["case"], r["level"]): r["value"] for r in expert_rows if r["parameter"] == "dhi"}
    out = {}
    for name in ("train", "validation"):
        paired = [r for r in model_rows
                  if r["parameter"] == "dhi" and split.get(r["case"]) == name and (r["case"], r["level"]) in expert]
        rel = np.array([r["value"] / expert[(r["case"], r["level"])] - 1 for r in paired])
        out[name] = {"n_discs": len(rel), "n_volunteers": len({r["subject"] for r in paired}),
                     "mean_relative_difference": round(float(rel.mean()), 4) if len(rel) else None,
                     "se": round(float(rel.std(ddof=1) / np.sqrt(len(rel))), 4) if len(rel) > 1 else None}
    return out


def build(data_dir: Path, predictions: Path | None = None, log=print, segment: bool = True) -> dict:
    references = {}
    collected = {}
    for masks in normative.MASKS:
        rows = collect(data_dir, masks, predictions, log, segment)
        collected[masks] = rows
        summary = summarise(rows)
        subjects = defaultdict(set)
        for r in rows:
            subjects[r["source"]].add(r["subject"])
        references[masks] = {
            "name": NAMES[masks],
            "masks": DESCRIPTIONS[masks],
            "volunteers": {source: len(s) for source, s in sorted(subjects.items())},
            "cases": sorted({r["case"] for r in rows}),
            "age_sex": AGE_SEX,
            **summary,
        }
    references["model"]["unseen_scans"] = {
        "what": "model - expert DHI of the same discs / expert DHI, by the model's own train/validation split",
        **unseen_scan_check(collected["model"], collected["expert"], model_split()),
    }
    return {
        "format": 1,
        "command": "python -m SpineAnalysisLib.measure.build_reference --data ../shared/data/lumbar_mri",
        "built": datetime.date.today().isoformat(),
        "model": _model_version(),
        "references": references,
    }


#: the shipped model's manifest: the reference's "model masks" come from this model
SHIPPED_MANIFEST = Path(__file__).resolve().parents[2] / "Resources" / "Models" / "spine-mri-2d" / "manifest.json"


def model_split() -> dict[str, str]:
    """case_id -> "train" / "validation" of the shipped model (its manifest)."""
    training = json.loads(SHIPPED_MANIFEST.read_text(encoding="utf-8"))["training"]
    split = {case: "train" for case in training["train_cases"]}
    split.update({case: "validation" for case in training["validation_cases"]})
    return split


def _model_version() -> str:
    try:
        data = json.loads(SHIPPED_MANIFEST.read_text(encoding="utf-8"))
        return f"{data.get('name', 'spine-mri-2d')}@{data.get('version', '?')}"
    except (OSError, ValueError):
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m SpineAnalysisLib.measure.build_reference", description=__doc__.split("\n")[0])
    from ..model.dataset import default_data_dir

    parser.add_argument("--data", type=Path, default=Path(default_data_dir()))
    parser.add_argument("--predictions", type=Path, default=None, help="folder of <case_id>.nii.gz model segmentations (reused / written)")
    parser.add_argument("--no-segment", action="store_true", help="model reference from the cases already in --predictions only")
    parser.add_argument("--output", type=Path, default=normative.REFERENCE_FILE)
    args = parser.parse_args(argv)
    if not (args.data / "manifest.csv").is_file():
        parser.error(f"{args.data}: no manifest.csv (the shared lumbar MRI folder)")
    data = build(args.data, args.predictions, segment=not args.no_segment)
    if not args.no_segment:
        data["command"] += " --predictions DIR"
    else:
        data["command"] += f" --predictions DIR --no-segment ({len(data['references']['model']['cases'])} cases segmented)"
    args.output.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
