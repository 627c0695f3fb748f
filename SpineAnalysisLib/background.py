"""Run a command in a background process, read its progress without blocking, cancel it with its children.

Pure Python (no Qt, no Slicer), so the same class serves the Slicer module (polled from a ``qt.QTimer``)
and scripts or tests (polled in a loop)::

    job = BackgroundProcess([sys.executable, "-m", "SpineAnalysisLib", "segment", "in.nii.gz",
                             "-o", "out.nii.gz", "--progress"])
    job.start()
    while job.is_running:
        for event in job.poll():
            print(event.fraction, event.message)
        time.sleep(0.1)

The command's standard output and standard error are merged and read line by line by a reader thread; a
line ``progress: <fraction 0..1> <message>`` becomes a :class:`ProgressEvent`, every other line a plain
log event. :meth:`BackgroundProcess.cancel` ends the whole process tree: on POSIX the command runs in a
session (process group) of its own and the group gets SIGTERM, then SIGKILL; on Windows ``taskkill /T /F``
ends the process and its descendants.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PROGRESS_PREFIX = "progress:"
_PROGRESS = re.compile(r"^\s*progress:\s*([-+0-9.eE]+)\s*(.*)$")


@dataclass(frozen=True)
class ProgressEvent:
    """One line of the command's output.

    ``fraction`` is the completed fraction (0..1) for a progress line, None for any other line;
    ``message`` is the rest of a progress line or the whole log line.
    """

    line: str
    fraction: float | None = None
    message: str = ""

    @property
    def is_progress(self) -> bool:
        return self.fraction is not None


def parse_line(line: str) -> ProgressEvent:
    """Turn one output line into an event (``progress: 0.25 loading model`` -> fraction 0.25)."""
    line = line.rstrip("\r\n")
    match = _PROGRESS.match(line)
    if match:
        try:
            fraction = float(match.group(1))
        except ValueError:
            return ProgressEvent(line, None, line)
        if fraction == fraction:  # not NaN
            return ProgressEvent(line, min(max(fraction, 0.0), 1.0), match.group(2).strip())
    return ProgressEvent(line, None, line)


def format_progress(fraction: float, message: str = "") -> str:
    """The line a worker prints to report progress (inverse of :func:`parse_line`)."""
    return f"{PROGRESS_PREFIX} {min(max(float(fraction), 0.0), 1.0):.4f} {message}".rstrip()


def pid_exists(pid: int) -> bool:
    """True while a process with this id exists (zombies included on POSIX)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        result = subprocess.run(
            ["tasklist", "/FI", f"PID eq {pid}", "/NH"], capture_output=True, text=True, check=False
        )
        return str(pid) in result.stdout
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_state(pid) not in ("Z", "X")  # a zombie has ended, only its parent has not reaped it


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux); None elsewhere or when gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            text = stream.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _proc_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def _live_group_members(group: int) -> list[int] | None:
    """Pids of the processes of a process group that have not ended (Linux); None where /proc is missing."""
    if not os.path.isdir("/proc/self"):
        return None
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _proc_stat(int(entry))
            # fields: state, ppid, pgrp, ...
            if fields and len(fields) > 2 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
                members.append(int(entry))
    return members


class BackgroundProcess:
    """A command running in the background whose output is read by a thread.

    :param args: the command and its arguments.
    :param env: the environment (default: this process's environment).
    :param cwd: working directory of the command.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None):
        self.args = [str(a) for a in args]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._process: subprocess.Popen | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._reader_done = threading.Event()
        self.lines: list[str] = []  # every line read so far, in order
        self.progress: float = 0.0  # the last reported fraction
        self.message: str = ""  # the last progress message
        self.cancelled = False

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> BackgroundProcess:
        if self._process is not None:
            raise RuntimeError("this process was started already")
        kwargs: dict = {}
        if os.name == "nt":  # pragma: no cover - Windows only
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # own process group: cancel() reaches the grandchildren
        env = dict(self.env if self.env is not None else os.environ)
        env.setdefault("PYTHONUNBUFFERED", "1")  # progress lines arrive when printed, not at exit
        self._process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._reader = threading.Thread(target=self._read, name=f"BackgroundProcess-{self._process.pid}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        try:
            for line in self._process.stdout:
                self._queue.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            self._reader_done.set()
            self._queue.put(None)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def returncode(self) -> int | None:
        """The exit status once the command has ended (negative: ended by that signal on POSIX)."""
        if self._process is None:
            return None
        return self._process.poll()

    @property
    def is_running(self) -> bool:
        """True until the command has exited and its output pipe is closed (lines may still wait in :meth:`poll`)."""
        if self._process is None:
            return False
        return self._process.poll() is None or not self._reader_done.is_set()

    @property
    def succeeded(self) -> bool:
        return not self.is_running and self.returncode == 0 and not self.cancelled

    # -- output -------------------------------------------------------------------------------------
    def poll(self) -> list[ProgressEvent]:
        """The lines printed since the last call, as events; never blocks."""
        events = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                continue
            self.lines.append(line)
            event = parse_line(line)
            if event.is_progress:
                self.progress = event.fraction  # type: ignore[assignment]
                self.message = event.message
            events.append(event)
        return events

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the command has ended (or ``timeout`` seconds); return its exit status."""
        if self._process is None:
            raise RuntimeError("the process was not started")
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self._process.returncode

    def output_tail(self, count: int = 20) -> str:
        """The last ``count`` non-progress lines (to explain a failure)."""
        self.poll()
        tail = [line for line in self.lines if not parse_line(line).is_progress]
        return "\n".join(tail[-count:])

    # -- cancel -------------------------------------------------------------------------------------
    def cancel(self, grace: float = 3.0) -> None:
        """End the command and every process it started; returns when they have ended."""
        if self._process is None:
            return
        self.cancelled = True
        process = self._process
        if os.name == "nt":  # pragma: no cover - Windows only
            if process.poll() is None:
                subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True, check=False)
        else:
            group = process.pid  # start_new_session: the group id is the child's pid
            # Signal the group even when the direct child has exited already: its children may live on.
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(group, sig)
                except (ProcessLookupError, PermissionError):
                    break
                if self._group_gone(group, process, wait):
                    break
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if SIGKILL was not delivered
            process.kill()
            process.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)

    @staticmethod
    def _group_gone(group: int, process: subprocess.Popen, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()  # reap the direct child so it does not linger as a zombie
            members = _live_group_members(group)
            if members is not None:
                if not members:
                    return True
            else:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    return True
                except PermissionError:
                    return False
            time.sleep(0.02)
        return False

    def __enter__(self) -> BackgroundProcess:
        return self

    def __exit__(self, *exc) -> None:
        if self.is_running:
            self.cancel()


def python_command(module: str, *args: str, executable: str | None = None) -> list[str]:
    """``[python, -m, module, *args]`` with this interpreter (or ``executable``)."""
    return [executable or sys.executable, "-m", module, *map(str, args)]
