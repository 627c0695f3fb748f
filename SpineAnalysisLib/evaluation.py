"""Scoring a model on labelled cases: ``spineanalysis evaluate``.

Metrics (computed only for structures the case annotates; the shared data are partially labelled):

* Dice of the vertebral-body class (all bodies as one class) and of the disc class (expert disc
  labels only); predicted structures of levels the case does not annotate (T12 or S1 around an L1-L5
  case, the T12-L1 disc of an L1-L2..L5-S1 disc case) are unknown, not errors, unless they overlap
  the annotated structures (:func:`~.model.dataset.scored_prediction`); and Dice per level.
* Level identification rate, VerSe rule (Sekuboyina et al., MedIA 2021): a reference structure is
  identified when the predicted structure of the same kind whose centroid is closest to the reference
  centroid lies within 20 mm and has the same level.
* Average symmetric surface distance (mm) of each class.
* Measurement agreement: the measurement engine run on the predicted and on the reference masks, per
  level: the disc's ``dhi``, ``height_mean_mm``, ``height_middle_mm`` and ``segmental_angle_deg`` and the
  vertebral bodies' anterior, middle and posterior heights (only bodies the case annotates); bias and
  mean absolute difference, overall and per source data set. Reference discs of body-only cases are the
  gap pseudo-labels of :mod:`SpineAnalysisLib.model.dataset` (stated in the report), those of disc cases
  are expert labels; the middle height and the angle come from the two bodies' endplates
  (:mod:`.measure.disc`), so they compare the predicted bodies with the expert bodies and are left out for
  cases whose reference outlines only the discs (there the reference measures them on the disc's own outline).

Every score is against the expert labels as published, including the structures listed in
:data:`~.model.dataset.KNOWN_LABEL_ERRORS` (training leaves those out; results stay comparable with published ones).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import labels as scheme
from .errors import InputError
from .model.dataset import add_pseudo_discs, default_data_dir, read_manifest, scored_prediction, split_cases
from .model.preprocessing import sagittal_frame

IDENTIFICATION_RADIUS_MM = 20.0
VERTEBRA_LABELS = scheme.ANATOMICAL_ORDER
DISC_LABELS = tuple(scheme.disc_label(v) for v in VERTEBRA_LABELS)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def average_surface_distance(a: np.ndarray, b: np.ndarray, reference: sitk.Image) -> float | None:
    """Average symmetric surface distance in mm between two boolean masks on ``reference``'s grid."""
    if not a.any() or not b.any():
        return None
    images = []
    for mask in (a, b):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(reference)
        images.append(image)
    distances = []
    for source, target in ((images[0], images[1]), (images[1], images[0])):
        contour = sitk.GetArrayFromImage(sitk.LabelContour(source, fullyConnected=False)) > 0
        target_contour = sitk.GetArrayFromImage(sitk.LabelContour(target, fullyConnected=False)) > 0
        # distance from each surface voxel of source to the surface of target
        distance_to_surface = sitk.GetArrayFromImage(
            sitk.SignedMaurerDistanceMap(_image_like(target_contour, reference), squaredDistance=False, useImageSpacing=True)
        )
        distances.append(np.abs(distance_to_surface[contour]))
    return float(np.concatenate(distances).mean())


def _image_like(mask: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(reference)
    return image


def centroids_mm(label_array: np.ndarray, reference: sitk.Image, wanted) -> dict[int, np.ndarray]:
    """Physical (LPS) centroid of each label in ``wanted`` present in the array."""
    matrix = np.asarray(reference.GetDirection()).reshape(3, 3) @ np.diag(reference.GetSpacing())
    origin = np.asarray(reference.GetOrigin())
    result = {}
    for label in wanted:
        index = np.argwhere(label_array == label)
        if index.size:
            result[label] = origin + matrix @ index.mean(axis=0)[::-1]
    return result


def identification(predicted: np.ndarray, reference: np.ndarray, image: sitk.Image, reference_labels) -> tuple[int, int, list[str]]:
    """(identified, total, misidentified names) by the VerSe rule for the given reference labels."""
    reference_centroids = centroids_mm(reference, image, reference_labels)
    predicted_labels = [int(v) for v in np.unique(predicted) if v]
    predicted_centroids = centroids_mm(predicted, image, predicted_labels)
    identified, errors = 0, []
    for label, centre in reference_centroids.items():
        same_kind = {p: c for p, c in predicted_centroids.items() if scheme.is_vertebra(p) == scheme.is_vertebra(label)}
        if not same_kind:
            errors.append(f"{scheme.structure_name(label)}: not found")
            continue
        nearest = min(same_kind, key=lambda p: np.linalg.norm(same_kind[p] - centre))
        distance = float(np.linalg.norm(same_kind[nearest] - centre))
        if nearest == label and distance <= IDENTIFICATION_RADIUS_MM:
            identified += 1
        else:
            errors.append(f"{scheme.structure_name(label)}: nearest is {scheme.structure_name(nearest)} at {distance:.0f} mm")
    return identified, len(reference_centroids), errors


def _reference_with_pseudo_discs(reference: np.ndarray, image: sitk.Image, annotated: set[int]) -> np.ndarray:
    frame = sagittal_frame(image)
    canonical = frame.to_canonical(reference.astype(np.int32))
    add_pseudo_discs(canonical, annotated, int(25.0 / frame.spacing[1]))
    return frame.from_canonical(canonical)


def thick_slice_copy(image: sitk.Image, labels: sitk.Image, thickness_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """A thick-slice sagittal acquisition simulated from a thin one: (image, labels) on slabs ``thickness_mm`` thick.

    The image's sagittal (left-right) slices are averaged in groups of round(thickness / spacing)
    (``sitk.BinShrink``: each new slice is the mean of its slab, as a thick slice averages the tissue
    across its thickness, and sits at the slab's centre); the labels are taken at the slab centres
    (nearest neighbour), so they stay the expert's. In-plane pixels are unchanged.
    """
    if thickness_mm <= 0:
        raise InputError(f"slice thickness must be > 0 mm, got {thickness_mm}")
    frame = sagittal_frame(image)
    axis = 2 - frame.axes[0]  # image index axis (x, y, z) of the sagittal slices (frame.axes are numpy axes)
    factor = max(1, int(round(thickness_mm / image.GetSpacing()[axis])))
    if image.GetSize()[axis] < 2 * factor:
        raise InputError(f"{image.GetSize()[axis]} sagittal slices are too few for {thickness_mm} mm slabs")
    factors = [1, 1, 1]
    factors[axis] = factor
    thick = sitk.BinShrink(sitk.Cast(image, sitk.sitkFloat32), factors)
    thick_labels = sitk.Resample(labels, thick, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())
    return thick, thick_labels


def score_prediction(predicted: np.ndarray, reference: np.ndarray, image: sitk.Image, vertebrae: list[int], discs: list[int]) -> dict:
    """Dice and surface distance of the body and disc classes (annotated levels only), Dice per level
    and level identification of one predicted label map against the expert's."""
    case: dict = {"dice_per_level": {}}
    if vertebrae:
        truth = np.isin(reference, vertebrae)
        predicted_class = scored_prediction(predicted, VERTEBRA_LABELS, vertebrae, truth)
        case["dice_vertebra"] = dice(predicted_class, truth)
        case["asd_vertebra_mm"] = average_surface_distance(predicted_class, truth, image)
    if discs:
        truth = np.isin(reference, discs)
        predicted_class = scored_prediction(predicted, DISC_LABELS, discs, truth)
        case["dice_disc"] = dice(predicted_class, truth)
        case["asd_disc_mm"] = average_surface_distance(predicted_class, truth, image)
    for label in vertebrae + discs:
        case["dice_per_level"][scheme.structure_name(label)] = dice(predicted == label, reference == label)
    found, total, errors = identification(predicted, reference, image, vertebrae + discs)
    case["identified"], case["identifiable"], case["identification_errors"] = found, total, errors
    return case


def evaluate_case(record, model_name=None, device="auto", fast=False, slice_thickness_mm=None, image_transform=None, measure=True, repair=True) -> dict:
    """Score the model on one case. ``image_transform`` (image -> image on the same grid) degrades the
    image before segmentation (stress tests); ``measure`` False skips the measurement agreement;
    ``repair`` is :func:`~.inference.segment_image`'s. When a repair pass replaced the first pass, the
    first pass is scored too (``first_pass``)."""
    from .inference import segment_image

    image = sitk.ReadImage(str(record.image_file))
    reference_image = sitk.ReadImage(str(record.label_file))
    if slice_thickness_mm:
        image, reference_image = thick_slice_copy(image, reference_image, slice_thickness_mm)
    if image_transform is not None:
        image = image_transform(image)
    reference = sitk.GetArrayFromImage(reference_image).astype(np.int32)
    started = time.time()
    result = segment_image(image, model_name, device, fast=fast, repair=repair)
    seconds = time.time() - started
    predicted = sitk.GetArrayFromImage(result.label_map).astype(np.int32)
    annotated = set(record.annotated_labels)
    vertebrae = sorted(l for l in annotated if scheme.is_vertebra(l))
    discs = sorted(l for l in annotated if scheme.is_disc(l))
    case: dict = {"case_id": record.case_id, "seconds": round(seconds, 2), "flags": result.report.flags, "confidence": result.report.confidence,
                  "levels_uncertain": result.report.levels_uncertain, "anchor": result.report.anchor, "repair": result.report.repair,
                  "stages": result.stages, "warnings": result.warnings, "noise": result.noise}
    case.update(score_prediction(predicted, reference, image, vertebrae, discs))
    if result.first_pass is not None:
        first = result.first_pass
        case["first_pass"] = {"confidence": first.report.confidence, "levels_uncertain": first.report.levels_uncertain, "anchor": first.report.anchor,
                              **score_prediction(sitk.GetArrayFromImage(first.label_map_on(image)).astype(np.int32), reference, image, vertebrae, discs)}
    if not measure:
        case["source"] = record.source
        return case

    try:
        case.update(measurement_agreement(image, reference, annotated, result.label_map if result.report.levels else None))
    except Exception as error:  # measurement failure is reported, not fatal for the evaluation
        case["measurement_error"] = f"{type(error).__name__}: {error}"
        case.update({"disc_agreement": {}, "vertebra_agreement": {}, "disc_missing": {}, "vertebra_missing": {}})
    case["source"] = record.source
    case["reference_discs"] = "gap pseudo-labels between expert bodies" if vertebrae else "expert disc labels"
    return case


def measurement_agreement(image: sitk.Image, reference: np.ndarray, annotated, predicted: sitk.Image | None) -> dict:
    """The compared measurements (:data:`COMPARED_DISC`, :data:`COMPARED_VERTEBRA`) on the expert label array
    ``reference`` (with its gap pseudo-discs when it outlines bodies) and on the ``predicted`` label map (None: nothing
    labelled), paired per level: ``disc_agreement`` / ``vertebra_agreement`` {parameter: [(level, expert, predicted)]}
    and ``disc_missing`` / ``vertebra_missing`` {parameter: [level]} (the expert masks give a value, the prediction none).
    Only the bodies ``annotated`` by the expert; a disc-only reference leaves out :data:`FROM_BODIES`."""
    from .measurements import measure_case

    vertebrae = [label for label in annotated if scheme.is_vertebra(label)]
    reference_for_measure = _reference_with_pseudo_discs(reference, image, set(annotated)) if vertebrae else reference
    reference_map = sitk.GetImageFromArray(reference_for_measure.astype(np.uint16))
    reference_map.CopyInformation(image)
    on_reference = _compared_values(measure_case(image, reference_map))
    on_prediction = _compared_values(measure_case(image, predicted)) if predicted is not None else {}
    out: dict = {"disc_agreement": {}, "vertebra_agreement": {}, "disc_missing": {}, "vertebra_missing": {}}
    vertebra_names = {scheme.structure_name(v) for v in vertebrae}
    for (structure, level, parameter), value in on_reference.items():
        if value is None:
            continue
        if structure == "disc":
            if parameter in FROM_BODIES and not vertebrae:
                continue  # a disc-only reference measures these on the disc's own outline, the prediction between its bodies
            kind = "disc"
        elif level in vertebra_names:  # only the bodies the expert outlined
            kind = "vertebra"
        else:
            continue
        predicted_value = on_prediction.get((structure, level, parameter))
        if predicted_value is None:  # not labelled, withheld or not measurable on the prediction
            out[f"{kind}_missing"].setdefault(parameter, []).append(level)
        else:
            out[f"{kind}_agreement"].setdefault(parameter, []).append((level, value, predicted_value))
    return out


#: Measurements compared between predicted and expert masks (``evaluate``): disc height index, mean
#: and middle disc height, segmental angle, and the anterior, middle and posterior vertebral-body heights.
COMPARED_DISC = ("dhi", "height_mean_mm", "height_middle_mm", "segmental_angle_deg")
#: disc values taken from the two bodies' endplates: compared only where the reference outlines the bodies
FROM_BODIES = ("height_middle_mm", "segmental_angle_deg")
COMPARED_VERTEBRA = ("height_anterior_mm", "height_middle_mm", "height_posterior_mm")


def _compared_values(measurements) -> dict:
    """{(structure, level, parameter): value} for the compared parameters."""
    wanted = {"disc": COMPARED_DISC, "vertebra": COMPARED_VERTEBRA}
    return {(m.structure, m.level, m.parameter): m.value for m in measurements if m.parameter in wanted.get(m.structure, ())}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _agreement(results: list[dict], key: str = "disc_agreement", parameters=COMPARED_DISC) -> dict:
    """Agreement of each parameter measured on predicted and on reference masks, over ``results``
    (bias = mean of predicted minus reference), and ``missing``: how many values the reference masks give and the
    prediction leaves empty (withheld, not measurable or not labelled), which the agreement cannot show."""
    agreement = {}
    missing_key = key.replace("agreement", "missing")
    for parameter in parameters:
        pairs = [(ref, pred) for case in results for _, ref, pred in case.get(key, {}).get(parameter, [])]
        missing = sum(len(case.get(missing_key, {}).get(parameter, [])) for case in results)
        if pairs:
            ref, pred = np.array(pairs).T
            agreement[parameter] = {"n": len(pairs), "mean_abs_difference": float(np.mean(np.abs(pred - ref))), "bias": float(np.mean(pred - ref)),
                                    "correlation": float(np.corrcoef(ref, pred)[0, 1]) if len(pairs) > 2 else None, "missing": missing}
        elif missing:
            agreement[parameter] = {"n": 0, "mean_abs_difference": None, "bias": None, "correlation": None, "missing": missing}
    return agreement


def _agreement_by_source(results: list[dict]) -> dict:
    """Per source data set: vertebral-body heights against expert bodies and disc heights against the
    case's disc reference (expert discs or gap pseudo-labels), with its Dice."""
    by_source: dict = {}
    for source in sorted({c["source"] for c in results}):
        cases = [c for c in results if c["source"] == source]
        by_source[source] = {
            "cases": len(cases),
            "dice_vertebra": _mean(c.get("dice_vertebra") for c in cases),
            "vertebra": _agreement(cases, "vertebra_agreement", COMPARED_VERTEBRA),
            "disc": _agreement(cases),
        }
    return by_source


def evaluate_model(data_dir=None, cases="validation", model_name=None, device="auto", progress=None, fast=False, slice_thickness_mm=None) -> dict:
    records = read_manifest(Path(data_dir) if data_dir else default_data_dir())
    if cases == "validation":
        records = split_cases(records)[1]
    elif cases != "all":
        wanted = set(cases.split(","))
        records = [r for r in records if r.case_id in wanted]
    results = []
    for number, record in enumerate(records):
        results.append(evaluate_case(record, model_name, device, fast, slice_thickness_mm))
        if progress:
            progress((number + 1) / len(records), record.case_id)
    per_level: dict[str, list[float]] = {}
    for case in results:
        for level, value in case["dice_per_level"].items():
            if value is not None:
                per_level.setdefault(level, []).append(value)
    by_reference = {kind: _agreement([c for c in results if c["reference_discs"] == kind]) for kind in sorted({c["reference_discs"] for c in results})}
    identified = sum(c["identified"] for c in results)
    identifiable = sum(c["identifiable"] for c in results)
    summary = {
        "cases": len(results),
        "dice_vertebra": _mean(c.get("dice_vertebra") for c in results),
        "dice_disc": _mean(c.get("dice_disc") for c in results),
        "asd_vertebra_mm": _mean(c.get("asd_vertebra_mm") for c in results),
        "asd_disc_mm": _mean(c.get("asd_disc_mm") for c in results),
        "level_identification_rate": identified / identifiable if identifiable else None,
        "identified": identified,
        "identifiable": identifiable,
        "dice_per_level": {level: float(np.mean(v)) for level, v in sorted(per_level.items(), key=lambda kv: scheme.anatomical_rank(scheme.label_from_name(kv[0])))},
        "disc_agreement": _agreement(results),
        "disc_agreement_by_reference": {kind: stats for kind, stats in by_reference.items() if stats},
        "vertebra_agreement": _agreement(results, "vertebra_agreement", COMPARED_VERTEBRA),
        "agreement_by_source": _agreement_by_source(results),
        "mean_seconds_per_case": _mean(c["seconds"] for c in results),
        "disc_cases": [c["case_id"] for c in results if "dice_disc" in c],
        "slice_thickness_mm": slice_thickness_mm,
    }
    return {"summary": summary, "cases": results}


def format_report(report: dict) -> str:
    s = report["summary"]
    fmt = lambda v, f="{:.3f}": "n/a" if v is None else f.format(v)  # noqa: E731
    lines = [
        f"cases: {s['cases']} (disc Dice on expert disc labels of: {', '.join(s['disc_cases']) or 'none'})"
        + (f"; simulated {s['slice_thickness_mm']:g} mm sagittal slabs" if s.get("slice_thickness_mm") else ""),
        f"vertebral-body class Dice: {fmt(s['dice_vertebra'])}   ASD {fmt(s['asd_vertebra_mm'], '{:.2f}')} mm",
        f"disc class Dice:           {fmt(s['dice_disc'])}   ASD {fmt(s['asd_disc_mm'], '{:.2f}')} mm",
        f"level identification rate: {fmt(s['level_identification_rate'])} ({s['identified']}/{s['identifiable']}, VerSe rule, 20 mm)",
        "Dice per level: " + ", ".join(f"{k} {v:.3f}" for k, v in s["dice_per_level"].items()),
    ]
    by_reference = dict(s.get("disc_agreement_by_reference", {"reference masks": s["disc_agreement"]}))
    by_reference["expert bodies"] = s.get("vertebra_agreement", {})
    for kind, agreement in by_reference.items():
        for parameter, stats in agreement.items():
            lines.append(f"{parameter} agreement (prediction vs {kind}): n={stats['n']}, mean |diff| {fmt(stats['mean_abs_difference'])}, "
                         f"bias {fmt(stats['bias'], '{:+.3f}')}, r {fmt(stats['correlation'], '{:.2f}')}; "
                         f"empty on the prediction: {stats.get('missing', 0)}")
    for source, stats in s.get("agreement_by_source", {}).items():
        parts = [f"{p} bias {fmt(v['bias'], '{:+.2f}')}, mean |diff| {fmt(v['mean_abs_difference'], '{:.2f}')} (n={v['n']}, empty {v.get('missing', 0)})"
                 for group in ("vertebra", "disc") for p, v in stats[group].items()]
        lines.append(f"{source} ({stats['cases']} cases, body Dice {fmt(stats['dice_vertebra'])}): " + ", ".join(parts))
    lines.append(f"mean time per case: {fmt(s['mean_seconds_per_case'], '{:.1f}')} s")
    for case in report["cases"]:
        if case["identification_errors"]:
            lines.append(f"  {case['case_id']}: " + "; ".join(case["identification_errors"]))
    return "\n".join(lines)
