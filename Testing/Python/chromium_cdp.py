"""A small headless-Chromium driver over the DevTools protocol (for the review page's end-to-end test).

Starts ``chromium --headless`` with a private profile and a DevTools port, attaches to its page target over
a websocket (``websocket-client``) and offers what the test needs: navigate, evaluate JavaScript, wait for
a condition, synthesized mouse events (``Input.dispatchMouseEvent``), screenshots, downloads.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    for path in (os.environ.get("CHROMIUM"), *CHROMIUM_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Chromium:
    def __init__(self, executable: str, width: int = 1600, height: int = 1000):
        import websocket  # websocket-client

        self.profile = tempfile.mkdtemp(prefix="spineanalysis-chromium-")
        port = free_port()
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
             f"--remote-debugging-port={port}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: close() ends the browser's helpers too
        )
        deadline = time.monotonic() + 30
        targets = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as response:
                    targets = [t for t in json.load(response) if t.get("type") == "page"]
                if targets:
                    break
            except OSError:
                time.sleep(0.2)
        if not targets:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        self.socket = websocket.create_connection(targets[0]["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self._ids = itertools.count(1)
        self.events: list[dict] = []
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params) -> dict:
        message_id = next(self._ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')} {result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or expression}")

    def click(self, x: float, y: float) -> None:
        self.mouse("mouseMoved", x, y)
        self.mouse("mousePressed", x, y, clickCount=1)
        self.mouse("mouseReleased", x, y, clickCount=1)

    def mouse(self, kind: str, x: float, y: float, **extra) -> None:
        params = {"type": kind, "x": float(x), "y": float(y), "button": "left" if kind != "mouseMoved" or extra.get("buttons") else "none"}
        if kind in ("mousePressed", "mouseReleased"):
            params.setdefault("clickCount", 1)
        params.update(extra)
        self.send("Input.dispatchMouseEvent", **params)

    def drag(self, points: list[tuple[float, float]], step_s: float = 0.05) -> None:
        """Press at the first point, move through the others with the left button held, release at the last."""
        (x0, y0), rest = points[0], points[1:]
        self.mouse("mouseMoved", x0, y0)
        time.sleep(step_s)
        self.mouse("mousePressed", x0, y0, buttons=1)
        for x, y in rest:
            time.sleep(step_s)
            self.mouse("mouseMoved", x, y, button="left", buttons=1)
        time.sleep(step_s)
        self.mouse("mouseReleased", *rest[-1] if rest else (x0, y0), buttons=0)

    def set_files(self, selector: str, paths: list[str]) -> None:
        """Choose files in an ``<input type=file>`` (as a user picking them in the file dialog)."""
        root = self.send("DOM.getDocument")["root"]["nodeId"]
        node = self.send("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.send("DOM.setFileInputFiles", files=[str(p) for p in paths], nodeId=node)

    def screenshot(self, path: str | os.PathLike) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def allow_downloads(self, folder: str | os.PathLike) -> None:
        self.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(folder), eventsEnabled=True)

    def close(self) -> None:
        try:
            self.socket.close()
        except Exception:  # noqa: BLE001
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        time.sleep(0.2)  # helpers may still be writing the profile while they exit
        shutil.rmtree(self.profile, ignore_errors=True)
