"""Which shared series pass the "looks T2-weighted" check of the disc signal measures? (prints a table)

The check (``SpineAnalysisLib.measure.disc.NOT_T2_ANNULUS_RATIO``): the median over a case's discs of the
annulus grey value / the CSF reference behind the disc must stay below 0.5. This prints that median per
case, with the manifest's sequence, on the expert labels (disc = space between expert vertebral bodies where
only bodies are labelled).

    .venv/bin/python Testing/DataChecks/t2_check.py [DATA_DIR]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.measure import build_reference, disc, inputs  # noqa: E402
from SpineAnalysisLib.measure.sections import Spine  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir  # noqa: E402


def main(data_dir: Path) -> None:
    with open(data_dir / "manifest.csv", newline="", encoding="utf-8") as stream:
        rows = [r for r in csv.DictReader(stream) if r["split"] == "shared" and r["kind"] == "image+labels"]
    print(f"{'case':8s} {'median annulus/CSF':>18s}  {'passes':6s}  sequence")
    for row in rows:
        image = sitk.ReadImage(str(data_dir / row["image_file"]))
        spine = Spine(inputs.load(image, build_reference.expert_label_map(data_dir, row)))
        ratios = [f.annulus for f in (disc.signal_criteria(spine, d, check_t2=False)[0] for d in spine.discs()) if f is not None]
        if not ratios:
            continue
        median = float(np.median(ratios))
        print(f"{row['case_id']:8s} {median:18.3f}  {'yes' if median < disc.NOT_T2_ANNULUS_RATIO else 'no':6s}  {row['sequence'][:70]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default_data_dir())
