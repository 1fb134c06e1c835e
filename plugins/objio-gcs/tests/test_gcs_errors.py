"""Failures the emulator never produces: error statuses, transient faults, dead and silent endpoints.

A small scripted HTTP server on 127.0.0.1 answers what each test tells it to; a closed port and a
listening socket that never answers stand in for dead endpoints.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import objio
from objio.errors import (
    ObjectExistsError,
    ObjectNotFoundError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)

Answer = tuple[int, dict[str, str], bytes]
Script = Callable[[str, str, dict[str, str], bytes], Answer]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _error(status: int, message: str) -> Answer:
    return _json(status, {"error": {"code": status, "message": message}})


class ScriptedGCS:
    """An HTTP server whose answers come from :attr:`script`; :attr:`seen` lists the requests."""

    def __init__(self) -> None:
        self.script: Script = lambda method, path, headers, body: _error(500, "no script")
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                outer.seen.append((self.command, self.path, headers, body))
                status, answer_headers, payload = outer.script(self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in answer_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def storage(self, **options: Any) -> Any:
        return objio.open_storage("gs://bkt/run", {"endpoint": self.endpoint, **options})


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedGCS]:
    monkeypatch.setattr("objio_gcs.transport._FIRST_BACKOFF", 0.05)  # keep retry tests quick
    server = ScriptedGCS()
    yield server
    server.close()


def _metadata(size: int = 3, **extra: Any) -> Answer:
    return _json(200, {"name": "run/k", "size": str(size), "generation": "7", **extra})


# -- status codes ---------------------------------------------------------------------------------


def test_transient_statuses_are_retried_with_backoff(gcs: ScriptedGCS) -> None:
    answers = iter([_error(503, "backend error"), _error(429, "rate limited"), _error(500, "oops"), _metadata(3)])
    gcs.script = lambda *request: next(answers)
    assert gcs.storage().size("k") == 3
    assert len(gcs.seen) == 4


@pytest.mark.parametrize(
    ("status", "error", "text"),
    [
        (403, StoragePermissionError, "permission denied to read gs://bkt/run/k: HTTP 403 .*no storage.objects.get"),
        (401, StoragePermissionError, "permission denied .* `gcloud auth application-default login`"),
        (404, ObjectNotFoundError, "gs://bkt/run/k does not exist"),
        (400, StorageError, "GCS refused to read gs://bkt/run/k: HTTP 400 .*no storage.objects.get"),
    ],
)
def test_final_statuses_become_objio_errors_at_once(
    gcs: ScriptedGCS, status: int, error: type[Exception], text: str
) -> None:
    gcs.script = lambda *request: _error(status, "caller has no storage.objects.get access")
    with pytest.raises(error, match=text) as caught:
        gcs.storage().size("k")
    assert type(caught.value) is error  # not a subclass that would mean something else
    assert len(gcs.seen) == 1  # not retried


def test_permission_errors_are_permission_errors(gcs: ScriptedGCS) -> None:
    gcs.script = lambda *request: _error(403, "forbidden")
    with pytest.raises(PermissionError):
        gcs.storage().list()


def test_persistent_server_errors_give_unavailable_within_the_deadline(gcs: ScriptedGCS) -> None:
    gcs.script = lambda *request: _error(503, "backend error")
    with pytest.raises(StorageUnavailableError, match=r"HTTP 503: backend error\) in (\d+) attempts") as caught:
        gcs.storage(retry_deadline=1).exists("k")
    assert type(caught.value) is StorageUnavailableError
    assert len(gcs.seen) > 2 and f"in {len(gcs.seen)} attempts" in str(caught.value)


# -- create-only on an ambiguous retry ---------------------------------------------------------------


def _write_id_in(multipart_body: bytes) -> str:
    """The write id in the metadata part of a multipart upload."""
    match = re.search(rb'"objio-write-id": "([0-9a-f]+)"', multipart_body)
    assert match, multipart_body[:300]
    return match[1].decode()


@pytest.mark.parametrize("ours", [True, False])
def test_a_retried_create_only_upload_checks_whose_object_it_found(gcs: ScriptedGCS, ours: bool) -> None:
    answers = iter([_error(503, "the first try may have landed"), _error(412, "Precondition Failed")])
    sent_ids: list[str] = []

    def script(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if method == "POST":
            sent_ids.append(_write_id_in(body))
            return next(answers)
        # The object now there: written by this writer's first try, or by another writer.
        return _metadata(16, metadata={"objio-write-id": sent_ids[0] if ours else "another writer's id"})

    gcs.script = script
    storage = gcs.storage()
    if ours:
        with storage.open_writer("k", if_absent=True) as f:
            f.write(b"checkpoint bytes")
    else:
        with pytest.raises(ObjectExistsError, match="gs://bkt/run/k already exists"):
            with storage.open_writer("k", if_absent=True) as f:
                f.write(b"checkpoint bytes")
    assert len(set(sent_ids)) == 1  # both tries carried the writer's one id
    assert [r[0] for r in gcs.seen] == ["POST", "POST", "GET"]


def test_a_412_for_an_object_with_no_write_id_is_refused(gcs: ScriptedGCS) -> None:
    # Equal bytes from another writer are not ours: only the write id counts.
    gcs.script = lambda method, *rest: _error(412, "Precondition Failed") if method == "POST" else _metadata(1)
    with pytest.raises(ObjectExistsError, match="gs://bkt/run/k already exists"):
        with gcs.storage().open_writer("k", if_absent=True) as f:
            f.write(b"x")
    assert [r[0] for r in gcs.seen] == ["POST", "GET"]


# -- resumable uploads resume where GCS stopped ----------------------------------------------------


class _ResumableServer:
    """Just enough of GCS's resumable protocol, with one chunk that fails after keeping part of it."""

    def __init__(self, fail_chunk: int, kept: float) -> None:
        self.data = bytearray()
        self.finished = False
        self.fail_chunk = fail_chunk
        self.kept = kept
        self.chunks = 0

    def __call__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if method == "POST":
            return 200, {"Location": "/upload/session/1"}, b""  # relative, as HTTP allows
        content_range = headers["Content-Range"]
        if content_range == "bytes */*":  # a status check
            return 308, ({"Range": f"bytes=0-{len(self.data) - 1}"} if self.data else {}), b""
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)|bytes \*/(\d+)", content_range)
        assert match, content_range
        if match[1] is not None:
            assert int(match[1]) == len(self.data), "a chunk must start where the session stands"
            self.chunks += 1
            if self.chunks == self.fail_chunk:
                self.data += body[: int(len(body) * self.kept)]
                return _error(503, "the answer is lost")
            self.data += body
        total = match[3] or match[4]
        if total not in (None, "*") and int(total) == len(self.data):
            self.finished = True
            return _json(200, {"name": "run/k", "size": total})
        return 308, {"Range": f"bytes=0-{len(self.data) - 1}"}, b""


@pytest.mark.parametrize("kept", [0.5, 1.0], ids=["half kept", "all kept"])
@pytest.mark.parametrize("fail_chunk", [2, 5], ids=["middle chunk", "final chunk"])
def test_a_failed_chunk_resumes_from_what_gcs_kept(gcs: ScriptedGCS, fail_chunk: int, kept: float) -> None:
    server = _ResumableServer(fail_chunk, kept)
    gcs.script = server
    data = bytes(range(256)) * 4096 + b"tail"  # four chunks of 256 KiB and a short one
    with gcs.storage(chunk_size=256 * 1024).open_writer("k") as f:
        f.write(data)
    assert server.finished and bytes(server.data) == data
    assert sum(1 for r in gcs.seen if r[2].get("Content-Range") == "bytes */*") == 1


@pytest.mark.parametrize("ours", [True, False])
def test_a_lost_answer_to_the_final_chunk_is_resolved_by_the_write_id(gcs: ScriptedGCS, ours: bool) -> None:
    started: list[str] = []

    def script(method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if method == "POST":  # the session starts: its metadata carries the write id
            started.append(json.loads(body)["metadata"]["objio-write-id"])
            return 200, {"Location": "/upload/session/1"}, b""
        if method == "PUT" and headers["Content-Range"].endswith("/*"):
            return 308, {"Range": "bytes=0-262143"}, b""  # the first chunk
        if method == "PUT":  # the final chunk lands, but every answer about it is lost
            return _error(503, "the answer is lost")
        return _metadata(300 * 1024, metadata={"objio-write-id": started[0] if ours else "another writer's id"})

    gcs.script = script
    storage = gcs.storage(chunk_size=256 * 1024, retry_deadline=0.2)
    if ours:
        with storage.open_writer("k") as f:
            f.write(bytes(300 * 1024))
    else:
        with pytest.raises(StorageUnavailableError, match="could not write gs://bkt/run/k"):
            with storage.open_writer("k") as f:
                f.write(bytes(300 * 1024))
    assert [r[0] for r in gcs.seen][-1] == ("GET" if ours else "DELETE")  # looked, or discarded after looking
    assert any(r[0] == "GET" and "/o/run%2Fk" in r[1] for r in gcs.seen)


# -- endpoints that do not answer --------------------------------------------------------------------


@pytest.mark.parametrize("deadline", [0.5, 2.0])
def test_a_dead_endpoint_gives_unavailable_after_the_retry_deadline(deadline: float) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"  # closed when the block ends: nothing listens
    storage = objio.open_storage("gs://bkt/run", {"endpoint": endpoint, "retry_deadline": deadline})
    with pytest.raises(StorageUnavailableError, match=f"could not list gs://bkt/run: {endpoint} did not answer") as e:
        storage.list()
    # It retried (backoff starts at 1 s, with jitter), and gave up once the deadline had passed.
    attempts = int(re.search(r"in (\d+) attempts? over ([\d.]+) s", str(e.value))[1])  # type: ignore[index]
    assert attempts == 1 if deadline == 0.5 else attempts >= 2  # the first pause is 0.5-1 s
    assert type(e.value.__cause__).__name__ == "ConnectionError"  # requests' refused connection, chained
    assert isinstance(e.value, ConnectionError)  # what callers catch today keeps catching it


def test_a_silent_endpoint_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (the kernel does) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        storage = objio.open_storage("gs://bkt/run", {"endpoint": endpoint, "read_timeout": 0.5, "retry_deadline": 1})
        with pytest.raises(StorageUnavailableError, match=r"did not answer \(.*Read timed out") as e:
            storage.exists("k")
        assert "read_timeout" in str(e.value)  # the message names the options that bound it
