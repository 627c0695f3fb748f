"""What the chain-end checks (``model.chain.lower_end_reasons``, ``upper_end_reasons``) see on the model's own
predictions of the shared scans and the bundled sample (prints one JSON line per case; not a timed test).

    .venv/bin/python Testing/Benchmarks/lower_end_check.py [--data ../shared/data/lumbar_mri] [--cases VB3_03,VB3_06] [--jsonl OUT]

Each image runs through ``segment_image`` (default settings, repair included); every call of the
check is recorded with its inputs: the chain's names, whether S1 was recognised, the room below the
lowest body along the chain (mm), the median body pitch (mm) and their ratio (the check fires above
``chain.MAX_ROOM_BELOW_RATIO`` when S1 is not recognised); and for the upper end the room above the highest
body and its ratio (``upper``; the check fires above ``chain.MAX_ROOM_ABOVE_RATIO`` when that body is below
T10). The expert label maps are partial (L1-L5
only on most scans), so the model's predictions are what the check must pass.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import SimpleITK as sitk

from SpineAnalysisLib.inference import segment_image
from SpineAnalysisLib.model import chain
from SpineAnalysisLib.model.dataset import default_data_dir

SAMPLE = Path(__file__).resolve().parents[2] / "Resources" / "Samples" / "MyoSegmenTUM_VB3_02_image.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--cases", default="", help="comma-separated case ids (default: all images and the sample)")
    parser.add_argument("--jsonl", type=Path, default=None)
    args = parser.parse_args()
    records: list[dict] = []
    check = chain.lower_end_reasons

    def recording(centroids, names, extent, s1_recognised):
        room, pitch = chain.room_below_mm(centroids, names, extent)
        records.append({"names": list(names), "s1_recognised": bool(s1_recognised), "room_mm": round(room, 1), "pitch_mm": round(pitch, 1),
                        "ratio": round(room / pitch, 2) if pitch else None})
        return check(centroids, names, extent, s1_recognised)

    chain.lower_end_reasons = recording
    upper_check = chain.upper_end_reasons

    def recording_upper(centroids, names, extent):
        room, pitch = chain.room_above_mm(centroids, names, extent)
        records.append({"upper": True, "names": list(names), "room_mm": round(room, 1), "pitch_mm": round(pitch, 1), "ratio": round(room / pitch, 2) if pitch else None})
        return upper_check(centroids, names, extent)

    chain.upper_end_reasons = recording_upper
    images = Path(args.data or default_data_dir()) / "images"
    paths = sorted(images.glob("*.nii.gz")) + [SAMPLE]
    if args.cases:
        paths = [p for p in paths if p.name.split(".")[0] in args.cases.split(",")]
    out = args.jsonl.open("a") if args.jsonl else None
    for path in paths:
        records.clear()
        started = time.time()
        report = segment_image(sitk.ReadImage(str(path)), device="cpu").report
        row = {"case": path.name.split(".")[0], "levels": [n for n in report.levels if "-" not in n], "anchor": report.anchor,
               "uncertain": report.levels_uncertain, "confidence": round(report.confidence, 3),
               "fires": any("no sacrum found" in f for f in report.flags), "fires_upper": any("no body labelled above" in f for f in report.flags), "passes": records[:], "seconds": round(time.time() - started, 1)}
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
