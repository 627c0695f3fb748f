"""Leave-one-subject-out z-scores and Pfirrmann estimates of the healthy volunteers (prints a table).

Each volunteer's DHI, HDR and delta SI are scored against a reference built from the other volunteers only
(``build_reference.summarise``), for the expert-mask and, with ``--predictions``, the model-mask reference; the
flag rule is :mod:`SpineAnalysisLib.measure.flags`. Also prints the in-sample Pfirrmann estimates of the healthy
T2 discs (their thresholds come from the same discs).

    python Testing/DataChecks/reference_loso.py [--predictions DIR] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from SpineAnalysisLib.measure import build_reference, flags  # noqa: E402
from SpineAnalysisLib.model.dataset import default_data_dir  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(default_data_dir()))
    parser.add_argument("--predictions", type=Path, default=None)
    args = parser.parse_args(argv)
    for masks in ("expert", "model") if args.predictions else ("expert",):
        rows = build_reference.collect(args.data, masks, args.predictions, log=lambda *_: None, segment=False)
        print(f"{masks} masks: {len({r['subject'] for r in rows})} volunteers")
        for parameter, zs in build_reference.leave_one_subject_out(rows).items():
            zs = np.array(zs)
            flagged = np.mean([flags.outside_normal(z, parameter) for z in zs])
            print(f"  {parameter:9s} n {len(zs):4d}  mean z {zs.mean():+.3f}  SD {zs.std(ddof=1):.3f}  flagged {100 * flagged:.1f} %")
        grades = Counter(int(r["value"]) for r in rows if r["parameter"] == "pfirrmann_estimate")
        print("  Pfirrmann estimate of the healthy T2 discs (in-sample):", dict(sorted(grades.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
