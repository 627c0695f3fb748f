"""How tall is a disc under each kind of reference in ../shared/data/lumbar_mri? (prints a table)

Three references disagree about where a disc ends and the endplate begins:

* expert disc outlines (Menezes-Reis et al. 2016): the 3 image cases and the 49 label-only maps;
* the gap between two expert vertebral-body outlines (MyoSegmenTUM, Chu, Siegen: 63 cases), which the
  training uses as disc pseudo-labels (``SpineAnalysisLib.model.dataset.add_pseudo_discs``).

Height of one disc: on the sagittal slice where the disc is largest, the mean number of disc rows
(superior-inferior, times the row spacing in mm) over the central 60 % of its anterior-posterior extent.

    python Testing/DataChecks/disc_height_conventions.py [DATA_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.model.dataset import MAX_PSEUDO_DISC_GAP_MM, add_pseudo_discs, default_data_dir, read_manifest  # noqa: E402
from SpineAnalysisLib.model.preprocessing import sagittal_frame  # noqa: E402


def central_height_mm(mask: np.ndarray, row_mm: float) -> float | None:
    """Mean superior-inferior extent (mm) over the central 60 % of the columns of the largest slice."""
    largest = mask[int(mask.sum(axis=(1, 2)).argmax())]
    columns = np.flatnonzero(largest.any(axis=0))
    if columns.size < 5:
        return None
    margin = int(0.2 * columns.size)
    return float(largest[:, columns[0] + margin : columns[-1] - margin + 1].sum(axis=0).mean() * row_mm)


def disc_heights(label_file: Path, annotated: set[int] | None = None) -> dict[int, float]:
    """Height per disc label of one label map; with ``annotated`` bodies, of their gap pseudo-discs."""
    image = sitk.ReadImage(str(label_file))
    frame = sagittal_frame(image)
    labels = frame.to_canonical(sitk.GetArrayFromImage(image).astype(np.int32))
    if annotated is not None:
        add_pseudo_discs(labels, annotated, int(MAX_PSEUDO_DISC_GAP_MM / frame.spacing[1]))
    heights = {}
    for disc in (int(v) for v in np.unique(labels) if scheme.is_disc(int(v))):
        height = central_height_mm(labels == disc, frame.spacing[1])
        if height is not None:
            heights[disc] = height
    return heights


def main(data_dir: Path) -> None:
    groups: dict[str, list[dict[int, float]]] = {"expert, label-only maps": [], "expert, image cases": [], "gap between expert bodies": []}
    for record in read_manifest(data_dir, kind="labels_only"):
        groups["expert, label-only maps"].append(disc_heights(record.label_file))
    for record in read_manifest(data_dir):
        if record.source == "IVD":
            groups["expert, image cases"].append(disc_heights(record.label_file))
        else:
            groups["gap between expert bodies"].append(disc_heights(record.label_file, set(record.annotated_labels)))
    discs = [120, 121, 122, 123, 124]
    print(f"{'reference':28s}" + "".join(f"{scheme.structure_name(d):>16s}" for d in discs))
    for name, cases in groups.items():
        cells = []
        for disc in discs:
            values = [case[disc] for case in cases if disc in case]
            cells.append(f"{np.mean(values):5.1f} ± {np.std(values):3.1f} ({len(values):2d})" if values else f"{'-':>16s}")
        print(f"{name:28s}" + "".join(f"{c:>16s}" for c in cells))
    print("mean ± SD mm (number of discs)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_dir())
