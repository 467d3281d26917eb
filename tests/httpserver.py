"""A loopback HTTP file server with Range support and injectable faults, for download tests.

Use the context manager ``serve(folder, **faults)`` (it yields the base URL, a ``str`` that
also carries ``.requests``, the list of requests the server saw), or import the ``http_serve``
fixture into a test module (``from httpserver import http_serve  # noqa: F401``) and call it as
a factory. The server binds 127.0.0.1 on a free port, answers at most ``max_requests`` requests
and shuts itself down after ``lifetime`` seconds even if a test forgets to.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class SeenRequest:
    """What the server recorded about one request."""

    path: str
    range: str | None
    status: int


class LoopbackFileServer(ThreadingHTTPServer):
    """Serve files under ``folder`` on 127.0.0.1 with optional faults.

    Faults: ``cut_after`` closes the connection after that many body bytes (once, on the first
    response with a body); ``ignore_range`` answers 200 with the whole file whatever the Range;
    ``rate`` (bytes per second, settable while serving) slows every body down, so a client can be
    stopped part way through; ``status`` maps URL paths (e.g. ``"/a/x.zip"``) to an HTTP error code to answer instead.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        folder: Path,
        *,
        cut_after: int | None = None,
        ignore_range: bool = False,
        status: dict[str, int] | None = None,
        max_requests: int = 64,
        rate: float | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder = Path(folder).resolve()
        self.cut_after = cut_after
        self.ignore_range = ignore_range
        self.status = dict(status or {})
        self.max_requests = max_requests
        self.rate = rate
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._cut_done = False

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def record(self, path: str, range_header: str | None, status: int) -> None:
        with self._lock:
            self.requests.append(SeenRequest(path, range_header, status))

    def take_cut(self) -> int | None:
        """The byte count to cut this response at, if the one-shot cut is still pending."""
        with self._lock:
            if self.cut_after is None or self._cut_done:
                return None
            self._cut_done = True
            return self.cut_after


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackFileServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean

    def do_GET(self) -> None:
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        range_header = self.headers.get("Range")
        if len(srv.requests) >= srv.max_requests:
            return self._fail(path, range_header, 503)
        if path in srv.status:
            return self._fail(path, range_header, srv.status[path])
        file = (srv.folder / urllib.parse.unquote(path).lstrip("/")).resolve()
        if not file.is_file() or not file.is_relative_to(srv.folder):
            return self._fail(path, range_header, 404)
        data = file.read_bytes()
        size = len(data)

        start, status = 0, 200
        match = _RANGE.match(range_header or "")
        if match and not srv.ignore_range:
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else size - 1
            if start >= size:
                srv.record(path, range_header, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = data[start : min(end, size - 1) + 1]
            status = 206

        srv.record(path, range_header, status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{size}")
        self.end_headers()
        cut = srv.take_cut()
        if cut is None or cut >= len(data):
            self._write(data)
            return
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _write(self, data: bytes) -> None:
        rate = self.server.rate  # this response's; a new one applies from the next request
        if not rate:
            self.wfile.write(data)
            return
        chunk = 1 << 16
        with contextlib.suppress(OSError):  # the client may be stopped part way: that is the point
            for i in range(0, len(data), chunk):
                self.wfile.write(data[i : i + chunk])
                time.sleep(chunk / rate)

    def _fail(self, path: str, range_header: str | None, code: int) -> None:
        self.server.record(path, range_header, code)
        body = f"{code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True


class ServedURL(str):
    """The base URL of a running server; ``.requests`` lists what it has seen so far."""

    server: LoopbackFileServer

    @property
    def requests(self) -> list[SeenRequest]:
        return self.server.requests


@contextlib.contextmanager
def serve(folder: Path, *, lifetime: float = 60.0, **faults: object) -> Iterator[ServedURL]:
    """Run a LoopbackFileServer over ``folder`` in a daemon thread; yield its base URL."""
    server = LoopbackFileServer(Path(folder), **faults)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    # A safety net so a leaked server never outlives the test session by much.
    timer = threading.Timer(lifetime, server.shutdown)
    timer.daemon = True
    thread.start()
    timer.start()
    url = ServedURL(server.base_url)
    url.server = server
    try:
        yield url
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http_serve() -> Iterator[Callable[..., ServedURL]]:
    """Factory fixture: ``http_serve(folder, **faults)`` starts a server stopped at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda folder, **faults: stack.enter_context(serve(folder, **faults))
