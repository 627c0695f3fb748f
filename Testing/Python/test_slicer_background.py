"""SpineAnalysisLib.background with real processes: progress lines, exit status, cancelling a process tree."""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from SpineAnalysisLib.background import BackgroundProcess, format_progress, parse_line, pid_exists

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the process-group checks are POSIX; Windows uses taskkill /T")


def _script(tmp_path, body: str) -> list[str]:
    path = tmp_path / "worker.py"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return [sys.executable, str(path)]


def _run_until(process: BackgroundProcess, predicate, timeout: float = 20.0):
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += process.poll()
        if predicate(events):
            return events
        time.sleep(0.02)
    raise AssertionError(f"timed out; output so far: {process.lines}")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_exists(pid):
            return True
        time.sleep(0.02)
    return False


def test_parse_and_format_progress_lines():
    event = parse_line("progress: 0.250 loading model L@1 on cpu\n")
    assert event.is_progress and event.fraction == 0.25 and event.message == "loading model L@1 on cpu"
    assert parse_line("progress: 1.5 done").fraction == 1.0  # clamped
    assert parse_line("progress: -0.1").fraction == 0.0
    for line in ("warning: progress: 0.5 in the middle", "progress: nan x", "progress: abc", "plain log line"):
        assert not parse_line(line).is_progress, line
        assert parse_line(line).message == line
    assert parse_line(format_progress(0.3333, "segmenting")) == parse_line("progress: 0.3333 segmenting")


def test_poll_reads_progress_while_the_process_runs(tmp_path):
    command = _script(
        tmp_path,
        """
        import sys, time
        for i in range(5):
            print(f"progress: {i / 4:.2f} step {i}", flush=True)
            time.sleep(0.05)
        print("a log line")
        print("an error line", file=sys.stderr)
        """,
    )
    process = BackgroundProcess(command).start()
    first = _run_until(process, lambda events: any(e.is_progress for e in events))
    assert process.is_running or process.returncode == 0  # first events arrive before the end (normally)
    events = first + _run_until(process, lambda events: not process.is_running)
    events += process.poll()
    assert process.returncode == 0 and process.succeeded
    progress = [e for e in events if e.is_progress]
    assert [e.fraction for e in progress] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert progress[-1].message == "step 4"
    assert {"a log line", "an error line"} <= {e.line for e in events if not e.is_progress}  # stderr merged
    assert process.progress == 1.0 and process.message == "step 4"


def test_failure_keeps_the_reason(tmp_path):
    command = _script(tmp_path, 'import sys\nprint("progress: 0.1 start", flush=True)\nsys.exit("input.nii.gz: not a readable image")\n')
    process = BackgroundProcess(command).start()
    assert process.wait(20) == 1
    assert not process.succeeded
    assert "not a readable image" in process.output_tail()
    assert "progress:" not in process.output_tail()


_TREE = """
import os, subprocess, sys, time, signal
if {ignore_term}:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time\\n"
    + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if {ignore_term} else "")
    + "time.sleep(120)"])
print(f"grandchild {{grandchild.pid}}", flush=True)
print("progress: 0.5 working", flush=True)
if {exit_early}:
    sys.exit(0)
time.sleep(120)
"""


@pytest.mark.parametrize(
    "ignore_term, exit_early",
    [(False, False), (True, False), (False, True)],
    ids=["terminates", "ignores-SIGTERM", "child-already-exited"],
)
def test_cancel_ends_the_process_and_its_children(tmp_path, ignore_term, exit_early):
    """Cancel reaches the grandchild (as with PythonSlicer -> python-real), escalates to SIGKILL, leaves nothing."""
    command = _script(tmp_path, _TREE.format(ignore_term=ignore_term, exit_early=exit_early))
    process = BackgroundProcess(command).start()
    events = _run_until(process, lambda events: any(e.line.startswith("grandchild") for e in events) and any(e.is_progress for e in events))
    grandchild = int(next(e.line for e in events if e.line.startswith("grandchild")).split()[1])
    child = process.pid
    assert pid_exists(grandchild)
    if exit_early:
        process.wait(20)
        assert process.returncode == 0 and pid_exists(grandchild)  # the worker outlives the launcher
    started = time.monotonic()
    process.cancel(grace=0.5)
    assert time.monotonic() - started < 15
    assert process.cancelled and not process.is_running and not process.succeeded
    assert _wait_gone(child), "the child process is still there"
    assert _wait_gone(grandchild), "the grandchild process is still there"
    if not exit_early:
        assert process.returncode in (-15, -9)


def test_context_manager_cancels_on_exit(tmp_path):
    command = _script(tmp_path, "import time\nprint('progress: 0 start', flush=True)\ntime.sleep(60)\n")
    with BackgroundProcess(command).start() as process:
        _run_until(process, lambda events: bool(events))
        pid = process.pid
    assert _wait_gone(pid)


def test_start_twice_and_poll_before_start():
    process = BackgroundProcess([sys.executable, "-c", "pass"])
    assert process.poll() == [] and not process.is_running and process.returncode is None
    process.start()
    with pytest.raises(RuntimeError):
        process.start()
    assert process.wait(20) == 0
