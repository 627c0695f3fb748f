"""Choose a model's inference settings on the TRAINING cases (never the validation split).

For every vertebral-body training case of the fixed split (every N-th with ``--every``), the shipped
network is run at each in-plane zoom of the chosen ``--scale-sets`` (``SCALE_SETS``: one scale, 0.9-1.1,
0.8-1.2, 0.7-1.3 ...); the vertebral-body class Dice (within the annotated levels, as
``spineanalysis evaluate`` scores it: predicted bodies of unannotated levels that do not overlap the
annotated ones are left out) is printed for each set's averaged probabilities at several
body-probability thresholds (see ``SpineAnalysisLib.model.predict.InferenceSettings``); ``--mirror``
also averages each set with its left-right mirror (for a 2.5D network, the neighbour order reversed);
``--context-sets`` averages a 2.5D network's predictions fed neighbours at each of several distances
(mm; the network's own ``slice_context_mm`` when not given).
With ``-o FILE`` the means are written as JSON, which ``export-model --calibration FILE`` stores in
the model's manifest (``inference_calibration``) beside the chosen values (``export-model
--test-time-scales ... --body-threshold ...``).

    python Testing/DataChecks/calibrate_inference.py [--model Resources/Models/spine-mri-2d] [--every 1]
        [--scale-sets "1 scale,3 scales"] [--mirror] [--context-sets "3;2,3,4.5"] [--thresholds 0,0.5,0.55]
        [-o calibration.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import SimpleITK as sitk
import torch

from SpineAnalysisLib.model.classes import LABEL_TO_CHANNEL, VERTEBRA_CHANNELS, VERTEBRA_CLASSES
from SpineAnalysisLib.model.dataset import read_manifest, scored_prediction, split_cases
from SpineAnalysisLib.model.network import gather_slices, input_config, input_slice_offsets
from SpineAnalysisLib.model.predict import _scale_averaged_probabilities, _smooth_across_slices, decide_classes, slice_smoothing_weights
from SpineAnalysisLib.model.preprocessing import normalise_intensity, sagittal_frame
from SpineAnalysisLib.model.store import find_model, load_network

SCALE_SETS = {
    "1 scale": (1.0,),
    "3 scales": (0.9, 1.0, 1.1),
    "5 scales": (0.8, 0.9, 1.0, 1.1, 1.2),
    "5 scales 0.7-1.3": (0.7, 0.85, 1.0, 1.15, 1.3),
    "7 scales": (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
}
THRESHOLDS = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8)


def body_dice(classes: np.ndarray, truth: np.ndarray, annotated_channels: list[int]) -> float:
    predicted = scored_prediction(classes, VERTEBRA_CHANNELS, annotated_channels, truth)
    return float(2 * (predicted & truth).sum() / (predicted.sum() + truth.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--every", type=int, default=1, help="use every N-th training case")
    parser.add_argument("-o", "--output", help="write the means as JSON (for export-model --calibration)")
    parser.add_argument("--scale-sets", default="1 scale,3 scales", help=f"comma-separated names of {list(SCALE_SETS)}")
    parser.add_argument("--mirror", action="store_true", help="also score each set averaged with its left-right mirror (2.5D networks: neighbour order reversed)")
    parser.add_argument("--context-sets", default="", help="';'-separated sets of comma-separated neighbour distances (mm) whose predictions are averaged, e.g. '3;2,3,4.5'; default: the network's own")
    parser.add_argument("--thresholds", default=",".join(str(t) for t in THRESHOLDS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    network = load_network(find_model(args.model))
    scale_sets = {name: SCALE_SETS[name] for name in args.scale_sets.split(",")}
    scales = sorted({scale for values in scale_sets.values() for scale in values})
    mirrors = (False, True) if args.mirror else (False,)
    own_context = input_config(network).slice_context_mm
    context_sets = [tuple(float(d) for d in group.split(",")) for group in args.context_sets.split(";")] if args.context_sets else [(own_context,)]
    distances = sorted({d for group in context_sets for d in group})
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    train, _ = split_cases(read_manifest())
    records = [r for r in train if any(scheme_label in VERTEBRA_CLASSES for scheme_label in r.annotated_labels)][:: args.every]
    scores: dict[str, list[float]] = {}
    started = time.time()
    for record in records:
        image = sitk.ReadImage(str(record.image_file))
        frame = sagittal_frame(image)
        canonical = normalise_intensity(frame.to_canonical(sitk.GetArrayFromImage(image)))
        volumes = {}
        for distance in distances:
            offsets = input_slice_offsets(input_config(network), frame.spacing[0], distance)
            volumes[distance] = torch.from_numpy(np.ascontiguousarray(gather_slices(canonical, np.arange(len(canonical)), offsets), dtype=np.float32))
        reference = frame.to_canonical(sitk.GetArrayFromImage(sitk.ReadImage(str(record.label_file))))
        annotated = [v for v in record.annotated_labels if v in VERTEBRA_CLASSES]
        truth = np.isin(reference, annotated)
        annotated_channels = [LABEL_TO_CHANNEL[v] for v in annotated]
        weights = slice_smoothing_weights(frame.spacing[0], 1.0)
        with torch.inference_mode():
            per_run = {}
            for scale in scales:
                for mirrored in mirrors:
                    for distance, volume in volumes.items():
                        fed = volume.flip(1) if mirrored else volume
                        parts = [_scale_averaged_probabilities(network, fed[i : i + 8], tuple(fed.shape[-2:]), (scale,), 8, False) for i in range(0, len(fed), 8)]
                        per_run[scale, mirrored, distance] = torch.cat(parts)
            variants = {}
            for name, values in scale_sets.items():
                for mirrored in mirrors:
                    for group in context_sets:
                        runs = [per_run[scale, m, d] for scale in values for m in mirrors if m <= mirrored for d in group]
                        context = "" if group == (own_context,) else f" + context {'/'.join(f'{d:g}' for d in group)} mm"
                        variants[name + (" + mirror" if mirrored else "") + context] = sum(runs) / len(runs)
            for name, probs in variants.items():
                smoothed = _smooth_across_slices(probs, weights, 0, len(probs))
                for threshold in thresholds:
                    classes = decide_classes(smoothed, threshold)[1].numpy()
                    scores.setdefault(f"{name}, threshold {threshold:.2f}", []).append(body_dice(classes, truth, annotated_channels))
        print(f"{record.case_id}: " + ", ".join(f"{k.split(',')[0]}@{k.split()[-1]} {v[-1]:.3f}" for k, v in scores.items() if k.endswith("0.55")), flush=True)
    print(f"\n{len(records)} training cases with vertebral bodies, {time.time() - started:.0f} s; mean body Dice:")
    for key, values in scores.items():
        print(f"  {key}: {np.mean(values):.4f}")
    if args.output:
        command = "python Testing/DataChecks/calibrate_inference.py" + (f" --model {args.model}" if args.model else "") + (f" --every {args.every}" if args.every != 1 else "") + f" --scale-sets '{args.scale_sets}'" + (" --mirror" if args.mirror else "") + (f" --context-sets '{args.context_sets}'" if args.context_sets else "") + f" --thresholds {args.thresholds}"
        result = {
            "chosen_on": f"{len(records)} vertebral-body training cases of the split (never the validation cases)",
            "command": command,
            "model": find_model(args.model).label,
            "seconds": round(time.time() - started),
            "mean_body_dice": {key: round(float(np.mean(values)), 4) for key, values in scores.items()},
        }
        with open(args.output, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=1)


if __name__ == "__main__":
    main()
