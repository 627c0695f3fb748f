"""Normal shape ratios measured on the model's masks against those of the expert masks (prints a table; not a test).

The Genant grade compares a body's wedge and biconcavity ratios with level normals built from the shared healthy
volunteers' expert masks (``build_genant_reference``). Graded on the model's masks, a healthy body is at risk of a
false grade if the model's ratios scatter more than the experts' or sit lower. This measures both ratios per level
on the model's masks of the same volunteers (``DIR/<case_id>.nii.gz``) and prints them beside the expert normals.

    python Testing/DataChecks/genant_model_normals.py --predictions DIR [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib import labels as scheme  # noqa: E402
from SpineAnalysisLib.measure import build_genant_reference as build  # noqa: E402
from SpineAnalysisLib.measure.build_reference import healthy_cases  # noqa: E402
from SpineAnalysisLib.measurements import measure_case  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--predictions", type=Path, required=True, help="folder of the model's <case_id>.nii.gz label maps")
    args = parser.parse_args()
    bodies = []
    for row in healthy_cases(args.data):
        prediction = args.predictions / f"{row['case_id']}.nii.gz"
        if not prediction.is_file():
            continue
        image = sitk.ReadImage(str(args.data / row["image_file"]))
        rows = measure_case(image, sitk.ReadImage(str(prediction)), labels=scheme.ANATOMICAL_ORDER)
        for level, ratios in build.body_values(rows).items():
            bodies.append({"case": row["case_id"], "subject": row["subject_group"] or row["case_id"], "level": level, **ratios})
    model, expert = build.summarise(bodies), build.summarise(build.collect(args.data))
    print("level ratio               model mean ± SD (n)     expert mean ± SD (n)")
    for level in sorted(set(model) & set(expert), key=lambda name: scheme.anatomical_rank(scheme.label_from_name(name))):
        for ratio in build.RATIOS:
            m, e = model[level].get(ratio), expert[level].get(ratio)
            if m and e:
                print(f"{level:5s} {ratio:17s} {m['mean']:.3f} ± {m['sd']:.3f} ({m['n']:3d})     {e['mean']:.3f} ± {e['sd']:.3f} ({e['n']:3d})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
