"""Headless Chromium driven through the DevTools protocol (tornado's websocket client).

Bokeh 3 renders its models inside shadow roots, which ``chromium --dump-dom`` leaves out; so
the tests evaluate JavaScript in the page (:data:`DEEP_TEXT_JS` walks the shadow roots) and
poll for the text they expect, with a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tornado.websocket import WebSocketClientConnection, websocket_connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)

#: All visible text of the page, shadow roots included, one chunk per text node.
DEEP_TEXT_JS = """
(() => {
  const out = [];
  const walk = (node) => {
    if (!node) return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        const t = child.textContent.trim();
        if (t) out.push(t);
      } else if (child.nodeName !== 'SCRIPT' && child.nodeName !== 'STYLE') {
        walk(child);
      }
    }
  };
  walk(document.documentElement);
  return out.join('\\n');
})()
"""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, *, width: int = 1400, height: int = 1000) -> None:
        self.executable = executable
        self.size = (width, height)
        self._profile = tempfile.TemporaryDirectory(
            prefix="airdask-chromium-", ignore_cleanup_errors=True
        )
        self._loop = asyncio.new_event_loop()
        self._ws: WebSocketClientConnection | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self.session_id: str | None = None

    def __enter__(self) -> Browser:
        profile = Path(self._profile.name)
        self._proc = subprocess.Popen(
            [
                self.executable,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group: Debian's `chromium` is a wrapper script, and the browser
            # and its helpers must all go when the test ends.
            start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self._proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise BrowserError("chromium did not open its DevTools port within 30 s")
            time.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        url = f"ws://127.0.0.1:{port}{path}"

        async def connect() -> WebSocketClientConnection:
            return await websocket_connect(url, max_message_size=256 * 2**20)

        self._ws = self._loop.run_until_complete(connect())
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, False
        )
        self.session_id = attached["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": self.size[0],
                "height": self.size[1],
                "deviceScaleFactor": 1,
                "mobile": False,
            },
        )
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._ws is not None:
                # A graceful close lets Chromium stop its helper processes and finish its
                # profile writes before the profile folder is removed.
                with contextlib.suppress(Exception):
                    self.send("Browser.close", session=False)
                self._ws.close()
        finally:
            if self._proc is not None:
                self._end_group(self._proc)
            self._loop.close()
            shutil.rmtree(self._profile.name, ignore_errors=True)
            self._profile.cleanup()

    @staticmethod
    def _end_group(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM the browser's process group, SIGKILL it if still there after 10 s."""
        pgid = proc.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader: a zombie would still count as the group
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> Any:
        """One DevTools command; returns its result, raises :class:`BrowserError` on error."""
        assert self._ws is not None
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session_id
        return self._loop.run_until_complete(self._call(message))

    async def _call(self, message: dict[str, Any]) -> Any:
        assert self._ws is not None
        await self._ws.write_message(json.dumps(message))
        while True:
            raw = await asyncio.wait_for(self._ws.read_message(), timeout=30)
            if raw is None:
                raise BrowserError("the DevTools connection closed")
            reply = json.loads(raw)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise BrowserError(f"{message['method']}: {reply['error']}")
                return reply.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        """The page's visible text, shadow roots included."""
        return str(self.evaluate(DEEP_TEXT_JS) or "")

    def wait_for_text(
        self, predicate: Callable[[str], bool], *, timeout: float = 30, what: str = ""
    ) -> str:
        """Poll the page's text until ``predicate`` holds; the text, or AssertionError with
        the last text seen."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"page never showed {what or 'the expected text'}; last:\n{text}")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
