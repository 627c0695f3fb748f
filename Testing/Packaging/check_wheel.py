"""Build the wheel, install it into a clean venv without the source tree, and analyse the shipped sample offline.

    .venv/bin/python Testing/Packaging/check_wheel.py      (make check-wheel; part of make test)

Checks what a user of ``pip install spineanalysis-*.whl`` gets: the model and the sample inside the package
(found through importlib.resources), and a working ``spineanalysis analyze``. Nothing is downloaded: the wheel is
built (from a copy of the files git tracks or would add) with ``--no-build-isolation`` and installed with ``--no-index --no-deps``; the heavy dependencies (torch,
MONAI, SimpleITK) are reused from this venv's site-packages through a .pth file, which adds that folder to
sys.path after the clean venv's own (so the installed package wins) and without running this venv's .pth
files (so the editable install of the source tree stays out). Every command runs in a temporary folder with
PYTHONPATH removed, and the script fails if the package, the model or the sample resolve into the source tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(command: list, cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"check-wheel: {' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def copy_source(target: Path) -> Path:
    """The files git would commit (tracked, and new ones not ignored), copied: the build sees neither a stale
    ``build/`` folder nor anything ignored, as when building from a fresh clone."""
    listing = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    for name in filter(None, listing.split("\0")):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def main() -> int:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="spineanalysis-wheel-") as temporary:
        work = Path(temporary)
        source = copy_source(work / "src")
        run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", work / "dist", source], cwd=work)
        wheel = next((work / "dist").glob("spineanalysis-*.whl"))
        print(f"check-wheel: built {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB)")

        venv = work / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
        python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
        purelib = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=work).strip())
        (purelib / "reuse-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(PIP_NO_INDEX="1", SPINEANALYSIS_MODELS="", HOME=str(work / "home"))
        run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel], cwd=work, env=env)

        where = json.loads(run([python, "-c", (
            "import json, SpineAnalysisLib, SpineAnalysisLib.shipped as s\n"
            "from SpineAnalysisLib.model.catalog import find_model\n"
            "print(json.dumps({'package': SpineAnalysisLib.__file__, 'model': str(find_model().weights_path), 'sample': str(s.sample_image())}))"
        )], cwd=work, env=env))
        for what, path in where.items():
            if not Path(path).resolve().is_relative_to(purelib.resolve()):
                raise SystemExit(f"check-wheel: the {what} resolves to {path}, outside the installed package ({purelib})")
        print(f"check-wheel: package, model and sample found inside the installed package ({purelib})")

        output = work / "out"
        script = venv / ("Scripts" if os.name == "nt" else "bin") / "spineanalysis"
        analyze_started = time.time()
        run([script, "analyze", where["sample"], "-o", output, "--device", "cpu", "--fast"], cwd=work, env=env)
        summary = json.loads((output / "summary.json").read_text(encoding="utf-8"))
        missing = {"labels.nii.gz", "measurements.csv", "measurements.json", "landmarks.json", "report.png", "summary.json"} - {p.name for p in output.iterdir()}
        if missing or not summary.get("levels"):
            raise SystemExit(f"check-wheel: analyze wrote no {sorted(missing)} / found no levels: {summary}")
        print(f"check-wheel: spineanalysis analyze on the sample: levels {', '.join(summary['levels'])} with {summary['model']} "
              f"in {time.time() - analyze_started:.1f} s; {time.time() - started:.1f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
