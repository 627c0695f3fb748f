"""Draw what the network sees of the synthetic disc cases (a PNG to look at, not a test).

Top row: the mid-sagittal slice of synthetic scenes built around label-only disc maps
(``SpineAnalysisLib.model.synthesis``), rendered with a random contrast, the expert disc outlines in
red. Bottom row: the same scenes as training crops (augmented, 224 x 224), as the sampler draws them.

    python Testing/DataChecks/synthetic_disc_examples.py [-o synthetic_discs.png] [--data DIR] [--count 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.model.dataset import default_data_dir  # noqa: E402
from SpineAnalysisLib.model.network import NetworkConfig  # noqa: E402
from SpineAnalysisLib.model.synthesis import load_synthetic_disc_cases, render  # noqa: E402
from SpineAnalysisLib.model.training import SliceSampler, TrainingConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default="synthetic_discs.png")
    parser.add_argument("--data", default=None, help="folder with manifest.csv (default: ../shared/data/lumbar_mri)")
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = load_synthetic_disc_cases(Path(args.data) if args.data else default_data_dir(), set(), args.seed)[: args.count]
    rng = np.random.default_rng(args.seed)
    config = TrainingConfig(batch_size=len(cases), augmentation_strength=0.5, network=NetworkConfig(slice_context_mm=3, in_channels=5).to_dict())
    crops, targets, _ = SliceSampler(cases, config).batch()
    figure, axes = plt.subplots(2, len(cases), figsize=(3 * len(cases), 6.5), squeeze=False)
    for column, case in enumerate(cases):
        middle = int(np.argmax((case.target > 0).sum(axis=(1, 2))))
        axes[0, column].imshow(render(case.scene, rng)[middle], cmap="gray", vmin=0, vmax=1)
        axes[0, column].contour(case.target[middle] > 0, levels=[0.5], colors="r", linewidths=0.6)
        axes[0, column].set_title(case.record.case_id, fontsize=8)
        axes[1, column].imshow(crops[column, crops.shape[1] // 2], cmap="gray")
        axes[1, column].contour(targets[column] > 0, levels=[0.5], colors="r", linewidths=0.6)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(args.output, dpi=80)
    print(f"wrote {args.output} ({len(cases)} synthetic cases)")


if __name__ == "__main__":
    main()
