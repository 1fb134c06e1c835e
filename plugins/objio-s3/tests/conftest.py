"""Fixtures: one moto_server per session on a free 127.0.0.1 port, a fresh bucket per test, and a
proxy in front of moto that fails chosen requests the way S3 does (throttling, denial, lost answers).

The session points the whole AWS chain at moto through the environment only (``AWS_ENDPOINT_URL``,
test credentials, ``AWS_DEFAULT_REGION``), the way users configure S3, and shuts out everything
else (``~/.aws``, instance metadata), so no test reaches an address other than 127.0.0.1.
"""

from __future__ import annotations

import http.client
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

MOTO_SERVER = Path(sys.executable).with_name("moto_server")

# A region is set in the environment, never in client_kwargs: s3fs then sends it to moto on
# CreateBucket and moto refuses us-east-1 as a LocationConstraint.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGCONT)  # a frozen one must wake up to hear the SIGTERM
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def start_moto_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A new moto_server process on a free 127.0.0.1 port (its log in ``folder``), and its endpoint."""
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | TEST_ENV
    for _ in range(3):  # a free port can be taken by someone else before moto binds it: try again
        port = _free_port()
        with open(folder / "moto.log", "ab") as log:
            process = subprocess.Popen(
                [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if _wait_for_port(port, process, timeout=30):
            return process, f"http://127.0.0.1:{port}"
        _stop(process)
    raise RuntimeError(f"moto_server did not start; see {folder / 'moto.log'}")


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto_server process, with the environment pointing at it."""
    folder = tmp_path_factory.mktemp("moto")
    process, endpoint = start_moto_server(folder)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in CLEARED_ENV:
                mp.delenv(name, raising=False)
            for name, value in TEST_ENV.items():
                mp.setenv(name, value)
            mp.setenv("AWS_ENDPOINT_URL", endpoint)
            # Nothing from the developer's ~/.aws may leak in (a profile, another endpoint).
            mp.setenv("AWS_CONFIG_FILE", str(folder / "no-config"))
            mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "no-credentials"))
            yield endpoint
    finally:
        _stop(process)


@pytest.fixture(scope="session", autouse=True)
def _aws_only_on_localhost(moto_endpoint: str) -> None:
    """Every test here runs with the environment above, even one that needs no server: none may
    find real credentials, or ask instance metadata at 169.254.169.254."""


@pytest.fixture(scope="session")
def s3_client(moto_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client on moto, to look at what objio left in a bucket."""
    client = boto3.client("s3", endpoint_url=moto_endpoint)
    yield client
    client.close()


@pytest.fixture
def bucket(s3_client: Any) -> str:
    """A new, empty bucket for this test."""
    name = f"objio-test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


def pending_uploads(client: Any, bucket: str) -> list[str]:
    """Keys with a multipart upload still open in ``bucket``."""
    return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


@pytest.fixture
def no_pending_uploads(s3_client: Any) -> Callable[[str], list[str]]:
    """``pending_uploads`` bound to the session's client."""
    return lambda bucket: pending_uploads(s3_client, bucket)


# -- a proxy that fails requests the way S3 does -------------------------------------------------

_SLOW_DOWN = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"""
_ACCESS_DENIED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"""


class FaultProxy:
    """Forwards requests to moto, except those matched by a rule added with :meth:`fail`.

    Actions: ``"slowdown"`` answers 503 SlowDown; ``"denied"`` answers 403 AccessDenied; ``"lose"``
    forwards the request (moto acts on it) and then drops the connection without an answer, as a
    network failure after the server committed would.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.seen: list[tuple[str, str, str]] = []  # (method, path?query, what was done)
        self.headers: list[dict[str, str]] = []  # the headers of each request in seen, lower-cased
        self.parts_running = 0  # UploadPart requests being served now
        self.most_parts_running = 0
        self._rules: list[list[Any]] = []
        self._meetings: list[list[Any]] = []  # [barrier, method, query, requests left]
        self.met: list[bool] = []  # per request held by meet(): whether the others came in time
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def fail(self, action: str, *, method: str | None = None, query: str = "", times: int = 1_000_000) -> None:
        """Apply ``action`` to the next ``times`` requests with this HTTP ``method`` and ``query`` text."""
        with self._lock:
            self._rules.append([action, method, query, times])

    def meet(self, parties: int, *, method: str, query: str = "", timeout: float = 30.0) -> None:
        """Hold the next ``parties`` requests with this ``method`` and ``query`` text until all of them
        are being served at once, then forward them. A request that waits ``timeout`` seconds in vain
        is forwarded anyway and recorded as ``False`` in :attr:`met`: the requests did not overlap."""
        with self._lock:
            self._meetings.append([threading.Barrier(parties, timeout=timeout), method, query, parties])

    def _meet(self, method: str, path: str) -> None:
        with self._lock:
            meeting = next((m for m in self._meetings if m[3] > 0 and m[1] == method and m[2] in path), None)
            if meeting is None:
                return
            meeting[3] -= 1
        try:
            meeting[0].wait()
        except threading.BrokenBarrierError:
            met = False
        else:
            met = True
        with self._lock:
            self.met.append(met)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _action_for(self, method: str, path: str) -> str:
        with self._lock:
            for rule in self._rules:
                action, want_method, query, times = rule
                if times > 0 and (want_method is None or want_method == method) and query in path:
                    rule[3] -= 1
                    return str(action)
        return "forward"

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        action = self._action_for(handler.command, handler.path)
        is_part = handler.command == "PUT" and "partNumber=" in handler.path
        with self._lock:
            self.seen.append((handler.command, handler.path, action))
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
            if is_part:
                self.parts_running += 1
                self.most_parts_running = max(self.most_parts_running, self.parts_running)
        try:
            self._meet(handler.command, handler.path)
            self._answer(handler, action, body)
        finally:
            if is_part:
                with self._lock:
                    self.parts_running -= 1

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, action: str, body: bytes) -> None:
        if action in ("slowdown", "denied"):
            status, payload = (503, _SLOW_DOWN) if action == "slowdown" else (403, _ACCESS_DENIED)
            handler.send_response(status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in ("connection", "content-length")}
            headers["Content-Length"] = str(len(body))
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        if action == "lose":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        handler.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                handler.send_header(name, value)
        # A HEAD answer has no body but tells the object's size.
        size = response.getheader("Content-Length", "0") if handler.command == "HEAD" else str(len(payload))
        handler.send_header("Content-Length", size)
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the session's moto_server."""
    proxy = FaultProxy(int(moto_endpoint.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


# -- a moto_server of a test's own, to freeze or kill ----------------------------------------------


class OwnMoto:
    """A moto_server process that one test alone uses, and may freeze (SIGSTOP), thaw or kill."""

    def __init__(self, folder: Path) -> None:
        self.process, self.endpoint = start_moto_server(folder)
        self.client = boto3.client("s3", endpoint_url=self.endpoint)
        self.bucket = "objio-faults"
        self.client.create_bucket(Bucket=self.bucket)

    def pending(self) -> list[str]:
        """Keys with a multipart upload still open in the bucket."""
        return pending_uploads(self.client, self.bucket)

    def freeze(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def own_moto(tmp_path: Path) -> Iterator[OwnMoto]:
    """An :class:`OwnMoto` with a bucket ``objio-faults``; stopped (thawed first) at the end."""
    moto = OwnMoto(tmp_path)
    try:
        yield moto
    finally:
        moto.client.close()
        _stop(moto.process)
