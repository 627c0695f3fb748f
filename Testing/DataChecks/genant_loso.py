"""Genant grades of healthy volunteers unseen by the normal ratios (prints numbers; not a test).

Each healthy volunteer of the shared data is measured by the engine (``measure_case``) against level normals built
from the other volunteers' expert masks only (``build_genant_reference.engine_grades``): on the expert masks and,
with ``--predictions``, on the model's masks of the same scans, the nearest thing here to held-out healthy
volunteers segmented by the model. A healthy body should get no grade above 0.

    python Testing/DataChecks/genant_loso.py [--predictions DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.measure import build_genant_reference as build  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--predictions", type=Path, help="folder of the model's <case_id>.nii.gz label maps")
    args = parser.parse_args()
    bodies = build.collect(args.data)
    print("expert masks, leave one volunteer out:", json.dumps(build.engine_grades(args.data, bodies)))
    if args.predictions:
        print("model masks, leave one volunteer out: ", json.dumps(build.engine_grades(args.data, bodies, predictions=args.predictions)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
