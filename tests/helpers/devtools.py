"""A tiny Chrome DevTools Protocol client (standard library only) to drive headless Chromium as
a person would: load a page, move and click the mouse, read what the page shows, and record
every console message, uncaught exception and network request along the way.

Only what the report tests need: one page, JSON-RPC over a client-side WebSocket (RFC 6455:
masked text frames out, unmasked frames in).
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


class DevToolsError(RuntimeError):
    pass


class Browser:
    """Headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, profile: Path, width: int = 1400, height: int = 1000, timeout: float = 60):
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self.process = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
             "--host-resolver-rules=MAP * ~NOTFOUND", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            port = self._devtools_port()
            page = self._page_target(port)
            self.sock = _websocket(page["webSocketDebuggerUrl"], timeout)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        sock = getattr(self, "sock", None)
        if sock is not None:
            sock.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # -------------------------------------------------------------- protocol

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        message_id = self._next_id
        _send(self.sock, json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            message = json.loads(_receive(self.sock))
            if message.get("id") == message_id:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)
        raise DevToolsError(f"{method}: no answer within {self.timeout} s")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise DevToolsError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def open(self, url: str, ready: str = "document.documentElement.getAttribute('data-ready') === '1'") -> None:
        """Record console, exceptions and requests from the start, navigate, wait until ``ready``."""
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable")
        self.call("Page.navigate", url=url)
        self.wait_for(ready)

    def wait_for(self, expression: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            try:
                if self.evaluate(f"!!({expression})"):
                    return
            except DevToolsError:
                pass  # e.g. evaluated while the navigation replaced the page's context
            time.sleep(0.05)
        raise DevToolsError(f"timed out waiting for {expression}")

    def mouse(self, kind: str, x: float, y: float, button: str = "none", clicks: int = 0) -> None:
        """``kind``: mouseMoved, mousePressed or mouseReleased, at viewport coordinates."""
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button=button, clickCount=clicks)

    def click(self, x: float, y: float, clicks: int = 1) -> None:
        self.mouse("mouseMoved", x, y)
        for n in range(1, clicks + 1):
            self.mouse("mousePressed", x, y, "left", n)
            self.mouse("mouseReleased", x, y, "left", n)

    # -------------------------------------------------------------- what happened

    def console_messages(self) -> list[str]:
        """Console calls, uncaught exceptions and browser log entries (CSP refusals among them)."""
        messages = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                messages.append(f"console.{params.get('type')}: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                messages.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Log.entryAdded":
                entry = params.get("entry", {})
                messages.append(f"log.{entry.get('level')}: {entry.get('text')}")
        return messages

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    # -------------------------------------------------------------- start-up

    def _devtools_port(self) -> int:
        deadline = time.monotonic() + self.timeout
        seen = ""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stderr], [], [], 0.5)
            if ready:
                line = self.process.stderr.readline()
                seen += line
                found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
                if found:
                    return int(found.group(1))
            if self.process.poll() is not None:
                break
        raise DevToolsError(f"chromium did not open a DevTools port:\n{seen[-2000:]}")

    def _page_target(self, port: int) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as answer:
            targets = json.load(answer)
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise DevToolsError(f"no page target among {targets}")
        return pages[0]


def _websocket(url: str, timeout: float) -> socket.socket:
    found = re.match(r"ws://([^:/]+):(\d+)(/.*)", url)
    if not found:
        raise DevToolsError(f"unexpected DevTools URL {url}")
    host, port, path = found.group(1), int(found.group(2)), found.group(3)
    sock = socket.create_connection((host, port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise DevToolsError("DevTools closed the connection during the handshake")
        response += chunk
    if b" 101 " not in response.split(b"\r\n", 1)[0]:
        raise DevToolsError(f"WebSocket handshake refused: {response[:200]!r}")
    return sock


def _send(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    header = bytearray([0x81])  # final frame, text
    if len(payload) < 126:
        header.append(0x80 | len(payload))
    elif len(payload) < 1 << 16:
        header += bytes([0x80 | 126]) + struct.pack(">H", len(payload))
    else:
        header += bytes([0x80 | 127]) + struct.pack(">Q", len(payload))
    mask = os.urandom(4)
    sock.sendall(bytes(header) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def _receive(sock: socket.socket) -> str:
    message = b""
    while True:
        first, second = _exactly(sock, 2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack(">H", _exactly(sock, 2))[0]
        elif length == 127:
            length = struct.unpack(">Q", _exactly(sock, 8))[0]
        payload = _exactly(sock, length)
        opcode = first & 0x0F
        if opcode == 0x8:
            raise DevToolsError("DevTools closed the connection")
        if opcode in (0x1, 0x2, 0x0):
            message += payload
            if first & 0x80:
                return message.decode()


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise DevToolsError("DevTools closed the connection")
        data += chunk
    return data
