"""Which levels does fine-tuning leave unknown beyond a map's highest and lowest body? (prints per case and totals)

Checks ``SpineAnalysisLib.finetune.levels_beyond_the_ends`` on the expert maps of ../shared/data/lumbar_mri:

* as published: which levels beyond the ends it marks, against the manifest's notes (the MyoSegmenTUM and Chu maps
  end at L5 with the sacrum "visually checked" in view below; the Siegen maps end at S1);
* with the top body removed wherever the image's top edge lies within 8 rows of it (a body the edge cuts, missed
  by the model and not added by the annotator): that body must come out unknown, not absent.

    python Testing/DataChecks/edge_levels.py [DATA_DIR]
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.finetune import levels_beyond_the_ends  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir, read_manifest  # noqa: E402
from SpineAnalysisLib.model.preprocessing import sagittal_frame  # noqa: E402

NEAR_EDGE_ROWS = 8


def names(labels) -> list[str]:
    return sorted((scheme.structure_name(v) for v in labels), key=lambda n: scheme.anatomical_rank(scheme.label_from_name(n)))


def main(data_dir: Path) -> None:
    marked, edge_cases, edge_unknown = Counter(), 0, 0
    for record in read_manifest(data_dir):
        image = sitk.ReadImage(str(record.label_file))
        array = sitk.GetArrayFromImage(image)
        canonical = sagittal_frame(image).to_canonical(array)
        bodies = sorted((int(v) for v in np.unique(canonical) if v and scheme.is_vertebra(int(v))), key=scheme.anatomical_rank)
        beyond = levels_beyond_the_ends(image)
        marked.update(names(beyond))
        line = f"{record.case_id}: bodies {names(bodies[:1] + bodies[-1:])}, unknown beyond the ends {names(beyond)}"
        if len(bodies) >= 3 and np.argwhere(canonical == bodies[0])[:, 1].min() <= NEAR_EDGE_ROWS:
            missed = sitk.GetImageFromArray(np.where(array == bodies[0], 0, array).astype(array.dtype))
            missed.CopyInformation(image)
            unknown = levels_beyond_the_ends(missed)
            edge_cases += 1
            edge_unknown += bodies[0] in unknown
            line += f"; top body {scheme.structure_name(bodies[0])} at the edge removed ({int((array == bodies[0]).sum())} voxels) -> {names(unknown)}"
        print(line)
    print(f"levels marked unknown beyond the ends of the published maps: {dict(sorted(marked.items()))}")
    print(f"a top body at the edge removed: unknown in {edge_unknown}/{edge_cases}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_dir())
