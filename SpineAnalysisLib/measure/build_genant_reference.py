"""Build ``genant_reference.json``: level-specific normal wedge and biconcavity ratios of healthy bodies.

    python -m SpineAnalysisLib.measure.build_genant_reference [--data DIR] [--output FILE]

Quantitative morphometry compares a body's height ratios with the ratios normal for its level (Eastell et al.,
J Bone Miner Res 6:207, 1991; McCloskey et al., Osteoporos Int 3:138, 1993): :mod:`.vertebra` grades the height
lost relative to the height expected from these means. This script measures them with this engine on the expert
masks of the shared healthy volunteers (the cases of :func:`.build_reference.healthy_cases`: MyoSegmenTUM VB3
L1-L5, Chu VB2 T11-L5, Siegen DzZ VB1_11 T10-S1; VB1_10 and the bundled sample VB3_02 left out), with their
images (so that chain-end bodies the engine calls incomplete are left out as they would be when grading).

Per level: n bodies, number of volunteers, mean and SD (n - 1) of ``wedge_ratio`` (anterior / posterior height)
and ``biconcavity_ratio`` (middle / posterior height), and of McCloskey's second ratios (:data:`.vertebra.PREDICTED_RATIOS`:
the anterior and middle heights over the mean posterior height of both neighbouring non-sacral bodies, from bodies
whose neighbours are measured whole too). A level with fewer than :data:`MIN_BODIES` bodies is not
written; :mod:`.vertebra` then expects 1.0 (the same-body posterior height, Genant's visual reference).
Pooled over all levels: the posterior height relative to the mean posterior height of both neighbouring
(non-sacral) bodies, ``posterior_to_neighbours`` (n, volunteers, mean, SD): a posterior height beyond its mean +
3 SD is not a plausible reference for the ratios (:func:`.vertebra.predicted_posterior`).
It also records how many healthy bodies the engine itself grades, in-sample and leave-one-volunteer-out
(:func:`engine_grades`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import labels as scheme
from ..model.dataset import default_data_dir
from .build_reference import healthy_cases
from .vertebra import PREDICTED_RATIOS, RATIO_HEIGHTS, reference_override

OUTPUT = Path(__file__).with_name("genant_reference.json")
RATIOS = ("wedge_ratio", "biconcavity_ratio")
#: posterior height / mean posterior height of both neighbouring non-sacral bodies (pooled over levels)
POSTERIOR = "posterior_to_neighbours"
#: the heights the ratios come from
HEIGHTS = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")
#: fewer bodies than this at a level: no level mean (the grade falls back to the same-body posterior height)
MIN_BODIES = 10


def collect(data_dir: Path) -> list[dict]:
    """One dict per measured body: case, subject, level, wedge_ratio, biconcavity_ratio."""
    from ..measurements import measure_case

    bodies = []
    for row in healthy_cases(data_dir):
        if not row["case_id"].startswith("VB"):
            continue
        label_map = sitk.ReadImage(str(Path(data_dir) / row["label_file"]))
        image_path = Path(data_dir) / row["image_file"]
        image = sitk.ReadImage(str(image_path)) if image_path.is_file() else None
        # only the vertebra rows are read: the discs and the spine's alignment are not measured
        for level, ratios in body_values(measure_case(image, label_map, labels=scheme.ANATOMICAL_ORDER)).items():
            bodies.append({"case": row["case_id"], "subject": row["subject_group"] or row["case_id"], "level": level, **ratios})
    return bodies


def measured_whole(rows) -> set[int]:
    """The bodies measured whole: those with a wedge ratio. :func:`.vertebra.rows` gives a body's ratios only when
    :meth:`.sections.Spine.body` takes it as whole, not for an incomplete chain end nor for a body labelled in part,
    whose heights it still reports (with a note saying which); so the posterior heights used here come from the same
    bodies as the ratios, whatever the notes say."""
    return {r.label for r in rows if r.parameter == "wedge_ratio" and r.value is not None}


def body_values(rows) -> dict[str, dict[str, float]]:
    """Per level of one case's measurement rows: its :data:`RATIOS`, their second ratios
    (:data:`.vertebra.PREDICTED_RATIOS`) and :data:`POSTERIOR`, from bodies measured whole."""
    rows = list(rows)
    whole = measured_whole(rows)
    values: dict[str, dict[str, float]] = defaultdict(dict)
    heights: dict[str, dict[int, float]] = defaultdict(dict)
    for r in rows:
        if r.parameter in RATIOS and r.value is not None:
            values[r.level][r.parameter] = float(r.value)
        if r.parameter in HEIGHTS and r.value is not None and r.label != scheme.SACRUM and r.label in whole:
            heights[r.parameter][r.label] = float(r.value)
    posterior = heights["height_posterior_mm"]
    for label, height in posterior.items():
        neighbours = [posterior.get(scheme.previous_vertebra(label)), posterior.get(scheme.next_vertebra(label))]
        if None in neighbours:
            continue
        expected = float(np.mean(neighbours))
        level = values[scheme.vertebra_name(label)]
        level[POSTERIOR] = height / expected
        for ratio, parameter in RATIO_HEIGHTS.items():
            if label in heights[parameter]:
                level[PREDICTED_RATIOS[ratio]] = heights[parameter][label] / expected
    return dict(values)


def summarise_posterior(bodies: list[dict]) -> dict:
    """n, volunteers, mean, sd of :data:`POSTERIOR` pooled over all levels."""
    here = [b for b in bodies if POSTERIOR in b]
    v = np.array([b[POSTERIOR] for b in here])
    return {"n": int(v.size), "volunteers": len({b["subject"] for b in here}),
            "mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4)}


def summarise(bodies: list[dict]) -> dict:
    """Per level and ratio: n, volunteers, mean, sd; levels under :data:`MIN_BODIES` bodies left out."""
    levels = {}
    for level in sorted({b["level"] for b in bodies}):
        entry = {}
        for ratio in RATIOS + tuple(PREDICTED_RATIOS.values()):
            here = [b for b in bodies if b["level"] == level and ratio in b]
            if len(here) < MIN_BODIES:
                continue
            v = np.array([b[ratio] for b in here])
            entry[ratio] = {"n": int(v.size), "volunteers": len({b["subject"] for b in here}),
                            "mean": round(float(v.mean()), 4), "sd": round(float(v.std(ddof=1)), 4)}
        if entry:
            levels[level] = entry
    return levels


def _reference(bodies: list[dict]) -> dict:
    return {"levels": summarise(bodies), POSTERIOR: summarise_posterior(bodies)}


def engine_grades(data_dir: Path, bodies: list[dict], leave_one_out: bool = True, predictions: Path | None = None) -> dict:
    """Genant grades the engine itself (:func:`~SpineAnalysisLib.measurements.measure_case`, every rule of
    :mod:`.vertebra`) gives the healthy expert-masked bodies: {"counts": {grade: n bodies}, "graded": {"case level":
    grade above 0}}. ``leave_one_out``: each volunteer against normals built from ``bodies`` without it
    (:func:`.vertebra.reference_override`), as a volunteer unseen by the reference would be graded; else against all.
    ``predictions``: a folder of the model's ``<case_id>.nii.gz`` label maps, measured instead of the expert masks
    (cases without one are skipped): how the model's masks of a volunteer unseen by the reference are graded."""
    from ..measurements import measure_case

    counts: Counter = Counter()
    graded = {}
    references = {}  # per left-out volunteer; one shared entry (None) in-sample
    for row in healthy_cases(data_dir):
        if predictions is None and not row["case_id"].startswith("VB"):
            continue
        subject = row["subject_group"] or row["case_id"]
        key = subject if leave_one_out else None
        if key not in references:
            references[key] = _reference([b for b in bodies if b["subject"] != key])
        label_file = Path(data_dir) / row["label_file"] if predictions is None else Path(predictions) / f"{row['case_id']}.nii.gz"
        if not label_file.is_file():
            continue
        label_map = sitk.ReadImage(str(label_file))
        image_path = Path(data_dir) / row["image_file"]
        image = sitk.ReadImage(str(image_path)) if image_path.is_file() else None
        with reference_override(references[key]):
            rows = measure_case(image, label_map, labels=scheme.ANATOMICAL_ORDER)
        for r in rows:
            if r.parameter == "genant_grade" and r.value is not None:
                counts[int(r.value)] += 1
                if r.value:
                    graded[f"{row['case_id']} {r.level}"] = int(r.value)
    return {"counts": {str(k): v for k, v in sorted(counts.items())}, "graded": graded}


def grade_counts(data_dir: Path, bodies: list[dict]) -> dict:
    """The engine's Genant grades of the healthy expert-masked bodies, in-sample and leave-one-volunteer-out."""
    return {"in_sample": engine_grades(data_dir, bodies, leave_one_out=False),
            "leave_one_volunteer_out": engine_grades(data_dir, bodies)}


def build(data_dir: Path) -> dict:
    bodies = collect(data_dir)
    return {
        "name": "SpineAnalysis level-specific normal height ratios v1 (expert masks)",
        "source": "this engine on the expert vertebral-body masks of the shared healthy volunteers "
                  "(python -m SpineAnalysisLib.measure.build_genant_reference)",
        "cases": sorted({b["case"] for b in bodies}),
        "min_bodies": MIN_BODIES,
        "levels": summarise(bodies),
        POSTERIOR: summarise_posterior(bodies),
        "healthy_grades": grade_counts(data_dir, bodies),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_data_dir()))
    parser.add_argument("--output", default=str(OUTPUT))
    args = parser.parse_args(argv)
    result = build(Path(args.data))
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for level, entry in result["levels"].items():
        print(level, json.dumps(entry))
    print(POSTERIOR, json.dumps(result[POSTERIOR]))
    print("healthy bodies by grade:", json.dumps(result["healthy_grades"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
