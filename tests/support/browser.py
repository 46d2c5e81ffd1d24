"""Headless Chromium driven over the DevTools protocol (websocket-client): open a page, wait
for its load event, evaluate JavaScript, take a full-page screenshot."""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import websocket

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> Optional[str]:
    """The first Chromium on PATH, or None."""
    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


class Page:
    """One browser tab: DevTools commands answered in order, events kept until asked for."""

    def __init__(self, url: str, timeout_s: float):
        self.socket = websocket.create_connection(url, timeout=timeout_s, suppress_origin=True)
        self.timeout_s, self.next_id, self.events = timeout_s, 0, []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message.get("method"))

    def open(self, url: str) -> None:
        """Navigate and return after the page's load event (its images loaded or failed)."""
        self.events.clear()
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout_s
        while "Page.loadEventFired" not in self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no load event in {self.timeout_s:.0f} s")
            self.events.append(json.loads(self.socket.recv()).get("method"))

    def evaluate(self, expression: str):
        """The JSON-serialisable value of a JavaScript expression."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}: {result['exceptionDetails']['text']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The whole page as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))


@contextmanager
def headless_page(chromium: str, width: int = 1280, height: int = 900, timeout_s: float = 60) -> Iterator[Page]:
    """A tab of a fresh headless Chromium (own profile folder, a free port), closed on exit."""
    with tempfile.TemporaryDirectory(prefix="chromium_") as profile, \
            open(Path(profile) / "stderr.txt", "w+") as log:
        process = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                    "--remote-debugging-port=0", f"--user-data-dir={profile}",
                                    f"--window-size={width},{height}", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=log)
        try:
            port_file, deadline = Path(profile) / "DevToolsActivePort", time.monotonic() + timeout_s
            while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"{chromium} did not start: {log.read()[-2000:]}")
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout_s) as answer:
                tab = next(target for target in json.load(answer) if target["type"] == "page")
            page = Page(tab["webSocketDebuggerUrl"], timeout_s)
            try:
                yield page
            finally:
                page.socket.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
