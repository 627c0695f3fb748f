"""Time ``spineanalysis analyze`` and ``segment`` on every real case of ../shared (prints numbers; not a test).

    .venv/bin/python Testing/Benchmarks/benchmark_cases.py [--commands analyze,segment] [--cases VB2_,IVD_11]
        [--threads 2] [--jsonl results.jsonl] [--table-only]

Each case runs as its own ``spineanalysis`` process, as a user would run it (Python start-up, model
loading, reading, segmenting and, for ``analyze``, measuring and writing the report). Per case and
command it records the wall time, the process CPU time (user + sys of the process and its threads,
from ``os.wait4``; less inflated than the wall time when other jobs share the cores), the peak
resident memory, the 1-minute load average before and after, and the stage times the run writes in
its summary (prepare, localise, segment, label, the share of the volume the full pass ran on, ``2nd``:
the repair pass when one ran, and for ``analyze`` measuring and the report; ``other`` is the wall time
outside the segmentation: start-up, model loading, reading, measuring, writing).

The processes run with ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it: with OpenMP's
default, a torch thread that waits for its partner spins, and on a machine shared with other jobs the
partner is often descheduled, so the spinning is counted as CPU time (measured here: VB2_05 34 s of
CPU with spinning, 11.9 s without, at load 6-9). Passive waiting counts only the work. ``quiet_s``,
the estimate for a quiet machine, is then bracketed: at least CPU time / threads (all threads busy all
the time) and at most the CPU time itself (one core doing all the work); start-up, reading, measuring
and the report are mostly single-threaded, so the truth lies nearer the upper end for ``analyze``
than for the segment stage alone. A case is over the limit only if even the lower end is. (The bracket is not
strict: on an idle machine both threads work and the passive CPU time grows, VB2_09 15-17 s against 11.7-14.6 s
under load, but the quiet wall times measured, 10.9-11.9 s, stayed below the loaded CPU time.)

Results are appended to ``--jsonl`` as they come (a case already there is skipped on the next run,
so an interrupted run resumes); ``--table-only`` prints the table and summary of that file.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data" / "lumbar_mri"
LIMIT_S = 20.0


def case_images(data: Path, patterns: list[str]) -> list[tuple[str, Path, str]]:
    """(case id, image path, shape) of every image case in the manifest whose id starts with a pattern."""
    with open(data / "manifest.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["image_file"]]
    chosen = [(r["case_id"], data / r["image_file"], r["shape"]) for r in rows if not patterns or any(r["case_id"].startswith(p) for p in patterns)]
    return sorted(chosen, key=lambda c: -_voxels(c[2]))  # largest first: the cases nearest the limit


def _voxels(shape: str) -> int:
    product = 1
    for size in shape.split("x"):
        product *= int(size)
    return product


def run_case(command: str, image: Path, threads: int, executable: Path, keep: Path | None = None) -> dict:
    """One ``spineanalysis COMMAND`` process on ``image``: times, memory, load and the summary's stages;
    ``keep``: a folder to copy the outputs to (they are deleted otherwise)."""
    with tempfile.TemporaryDirectory(prefix="bench_cases_") as work:
        work = Path(work)
        record = _run_in(work, command, image, threads, executable)
        if keep is not None and not record["exit_status"]:
            shutil.copytree(work, keep / f"{image.name.split('.')[0]}_{command}", dirs_exist_ok=True)
        return record


def _run_in(work: Path, command: str, image: Path, threads: int, executable: Path) -> dict:
    environment = dict(os.environ)
    environment.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if command == "analyze":
        args = [str(executable), "analyze", str(image), "-o", str(work / "out"), "--threads", str(threads)]
        summary_path = work / "out" / "summary.json"
    else:
        summary_path = work / "summary.json"
        args = [str(executable), "segment", str(image), "-o", str(work / "labels.nii.gz"), "--threads", str(threads), "--summary", str(summary_path)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(work / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, env=environment)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    error = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()
    record = {
        "command": command, "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "omp_wait_policy": environment["OMP_WAIT_POLICY"],
        "exit_status": os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8,
    }
    if record["exit_status"]:
        record["error"] = error[-1] if error else "no message"
        return record
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    record["segmentation_s"] = summary.get("seconds")
    record["stages"] = summary.get("stages", {})
    record["levels"] = summary.get("levels", [])
    record["quiet_s"] = round(record["cpu_s"] / threads, 1)
    return record


def print_table(records: list[dict], header: bool = True) -> None:
    line = (f"{'case':8} {'command':8} {'shape':11} {'wall':>6} {'cpu':>6} {'quiet':>6} {'rss MB':>7} {'load':>5}  {'prep':>5} {'loc':>5} {'seg':>6} "
            f"{'label':>5} {'2nd':>5} {'meas':>5} {'rpt':>5} {'other':>6} {'box':>5}")
    if header:
        print(line)
    for r in records:
        if r.get("exit_status"):
            print(f"{r['case']:8} {r['command']:8} {r['shape']:11} FAILED: {r.get('error')}")
            continue
        st = r.get("stages", {})
        other = r["wall_s"] - (r.get("segmentation_s") or 0.0)
        print(f"{r['case']:8} {r['command']:8} {r['shape']:11} {r['wall_s']:6.1f} {r['cpu_s']:6.1f} {r['quiet_s']:6.1f} {r['peak_rss_mb']:7.0f} "
              f"{r['load_before']:5.1f}  {st.get('prepare_s', 0):5.1f} {st.get('localise_s', 0):5.1f} {st.get('segment_s', 0):6.1f} "
              f"{st.get('label_s', 0):5.1f} {_second_pass(st):5.1f} {st.get('measure_s', 0):5.1f} {st.get('report_s', 0):5.1f} {other:6.1f} {st.get('box_fraction', 1):5.2f}")
    sys.stdout.flush()


def _second_pass(stages: dict) -> float:
    """Seconds of the repair pass (denoising and a second segmentation), 0 when none ran."""
    return sum(v for k, v in stages.items() if k.startswith("repair_") and k.endswith("_s"))


def print_summary(records: list[dict]) -> None:
    print()
    for command in sorted({r["command"] for r in records}):
        done = [r for r in records if r["command"] == command and not r.get("exit_status")]
        failed = [r for r in records if r["command"] == command and r.get("exit_status")]
        if not done:
            print(f"{command}: no successful run ({len(failed)} failed)")
            continue
        by_shape: dict[str, list[dict]] = {}
        for r in done:
            by_shape.setdefault(r["shape"], []).append(r)
        worst = max(done, key=lambda r: r["cpu_s"])
        over_low = [r["case"] for r in done if r["quiet_s"] > LIMIT_S]
        over_high = [r["case"] for r in done if r["cpu_s"] > LIMIT_S]
        print(f"{command}: {len(done)} cases ({len(failed)} failed); quiet estimate CPU / threads to CPU: median "
              f"{statistics.median(r['quiet_s'] for r in done):.1f}-{statistics.median(r['cpu_s'] for r in done):.1f} s, "
              f"worst {worst['quiet_s']:.1f}-{worst['cpu_s']:.1f} s ({worst['case']}, {worst['shape']}); over {LIMIT_S:.0f} s: "
              f"{', '.join(over_low) or 'none'} (lower end), {', '.join(over_high) or 'none'} (upper end); "
              f"peak RSS max {max(r['peak_rss_mb'] for r in done):.0f} MB; load average {min(r['load_before'] for r in done):.1f}-{max(r['load_before'] for r in done):.1f}")
        for shape, rows in sorted(by_shape.items()):
            print(f"  {shape:11} n={len(rows):2}  wall median {statistics.median(r['wall_s'] for r in rows):5.1f} s  CPU median {statistics.median(r['cpu_s'] for r in rows):5.1f} s "
                  f"(max {max(r['cpu_s'] for r in rows):5.1f})  segment stage median {statistics.median(r['stages'].get('segment_s', 0) for r in rows):5.1f} s  "
                  f"box {statistics.median(r['stages'].get('box_fraction', 1) for r in rows):.2f}  RSS max {max(r['peak_rss_mb'] for r in rows):5.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the lumbar_mri folder (default: ../shared/data/lumbar_mri)")
    parser.add_argument("--commands", default="analyze,segment", help="comma-separated: analyze, segment")
    parser.add_argument("--cases", default="", help="comma-separated case-id prefixes (default: every image case)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jsonl", type=Path, default=Path("benchmark_cases.jsonl"), help="results, appended as they come")
    parser.add_argument("--keep", type=Path, help="keep each run's outputs in this folder (CASE_COMMAND/)")
    parser.add_argument("--table-only", action="store_true", help="print the table of --jsonl without running anything")
    args = parser.parse_args()
    if not (args.data / "manifest.csv").is_file():
        print(f"benchmark_cases: error: {args.data} has no manifest.csv (../shared absent?)", file=sys.stderr)
        return 2
    commands = [c for c in args.commands.split(",") if c]
    if any(c not in ("analyze", "segment") for c in commands):
        print(f"benchmark_cases: error: --commands takes analyze and/or segment, got {args.commands!r}", file=sys.stderr)
        return 2
    executable = Path(sys.executable).with_name("spineanalysis")
    done = []
    if args.jsonl.is_file():
        done = [json.loads(line) for line in args.jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not args.table_only:
        print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
              f"{args.threads} threads; started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", flush=True)
        seen = {(r["case"], r["command"]) for r in done}
        with open(args.jsonl, "a", encoding="utf-8") as out:
            for case, image, shape in case_images(args.data, [p for p in args.cases.split(",") if p]):
                for command in commands:
                    if (case, command) in seen:
                        continue
                    record = {"case": case, "shape": shape, **run_case(command, image, args.threads, executable, args.keep)}
                    out.write(json.dumps(record) + "\n")
                    out.flush()
                    done.append(record)
                    print_table([record], header=False)
                    sys.stdout.flush()
    print_table(done)
    print_summary(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
