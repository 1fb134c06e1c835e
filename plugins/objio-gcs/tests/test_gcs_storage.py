"""What the GCS backend promises beyond the conformance suite, checked against fake-gcs-server.

The upload protocol (one request for small data, a resumable session in 256 KiB-aligned chunks for
large data, the object visible only at finalisation, the session cancelled on failure), bounded
memory, range reads, configuration, and create-only on each upload path.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

import google.auth.credentials
import numpy as np
import pytest

import objio
from objio.errors import (
    ChangedWhileReadingError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjioError,
    StoragePermissionError,
)
from objio_gcs import GCSStorage, plugin
from objio_gcs.config import GCSOptions, load_credentials
from objio_gcs.errors import GCSOptionsError
from objio_gcs.storage import READ_BLOCK as READ_BUFFER

KIB = 1 << 10
MIB = 1 << 20
SMALL_CHUNKS = {"chunk_size": 256 * KIB}


def _payload(nbytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8).tobytes()


def _read(storage: Any, key: str) -> bytes:
    with storage.open_reader(key) as f:
        return f.read()  # type: ignore[no-any-return]


# -- the plugin and its configuration ---------------------------------------------------------------


def test_plugin_claims_gs_and_gcs_urls_only(gcs_endpoint: str) -> None:
    storage = objio.open_storage("gs://objio-test/run/one")
    assert isinstance(storage, GCSStorage)
    assert (storage.bucket, storage.prefix) == ("objio-test", "run/one/")
    assert objio.open_storage("GCS://objio-test").prefix == ""  # type: ignore[attr-defined]
    for url in ("s3://bucket/run", "memory://x", "/tmp/run", "run", "file:///tmp/run"):
        assert plugin.objio_storage(url, {}) is None


def test_unknown_options_are_refused_with_what_is_accepted(gcs_endpoint: str) -> None:
    with pytest.raises(GCSOptionsError, match=r"unknown storage_options \['anon'\].*'project', 'token', 'endpoint'"):
        objio.open_storage("gs://objio-test/run", {"anon": True})
    assert issubclass(GCSOptionsError, ObjioError)
    assert issubclass(GCSOptionsError, TypeError) and issubclass(GCSOptionsError, ValueError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"chunk_size": 1000}, "multiple of 256 KiB"),
        ({"chunk_size": 0}, "multiple of 256 KiB"),
        ({"connect_timeout": 0}, "positive number of seconds"),
        ({"read_concurrency": 0}, "positive whole number"),
        ({"read_timeout": -1.0}, "positive number of seconds"),
        ({"timeout": 5}, r"unknown storage_options \['timeout'\]"),
        ({"retry_deadline": "soon"}, "positive number of seconds"),
        ({"endpoint": "http://a", "endpoint_url": "http://b"}, "not both"),
    ],
)
def test_bad_option_values_are_refused(gcs_endpoint: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(GCSOptionsError, match=message):
        objio.open_storage("gs://objio-test/run", options)


@pytest.mark.parametrize("url", ["gs:///no-bucket", "gs://bucket/a//b", "gs://bucket/a/../b", "gs://bucket/run?x=1"])
def test_malformed_urls_are_refused(gcs_endpoint: str, url: str) -> None:
    with pytest.raises(GCSOptionsError, match="gs://"):
        GCSStorage(url)


def test_explicit_endpoint_without_the_environment_variable(
    gcs_endpoint: str, gcs_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    storage = objio.open_storage(gcs_url, {"endpoint_url": gcs_endpoint.replace("http://", "")})
    with storage.open_writer("k") as f:
        f.write(b"through the endpoint option")
    assert _read(storage, "k") == b"through the endpoint option"


def test_credentials_default_to_adc_and_to_anonymous_for_an_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    assert GCSOptions().resolved_endpoint() is None
    assert GCSOptions().resolved_token(None) == "google_default"
    assert GCSOptions().resolved_token("http://127.0.0.1:1") == "anon"
    assert GCSOptions(token="/key.json").resolved_token("http://127.0.0.1:1") == "/key.json"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")
    assert GCSOptions().resolved_endpoint() == "http://127.0.0.1:4443"


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("anon", "AnonymousCredentials"),
        ({"type": "authorized_user", "client_id": "i", "client_secret": "s", "refresh_token": "r"}, "Credentials"),
    ],
)
def test_tokens_become_google_auth_credentials(token: Any, kind: str) -> None:
    credentials, _ = load_credentials(GCSOptions(token=token), "http://127.0.0.1:1", "gs://b/run")
    assert type(credentials).__name__ == kind
    assert isinstance(credentials, google.auth.credentials.Credentials)
    given = google.auth.credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
    assert load_credentials(GCSOptions(token=given), None, "gs://b/run")[0] is given


def test_unusable_credentials_are_a_permission_error_that_says_how_to_fix_it(tmp_path: Any) -> None:
    with pytest.raises(StoragePermissionError, match=r"no usable Google credentials for gs://b/run: .*gcloud auth"):
        load_credentials(GCSOptions(token=str(tmp_path / "missing.json")), None, "gs://b/run")
    with pytest.raises(GCSOptionsError, match=r"storage_options\['token'\] .* got int"):
        load_credentials(GCSOptions(token=42), None, "gs://b/run")


def test_storages_with_the_same_options_share_credentials_and_connections(
    gcs_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    real = load_credentials

    def counting(*args: Any) -> Any:
        loads.append(args)
        return real(*args)

    monkeypatch.setattr("objio_gcs.storage.load_credentials", counting)
    first = objio.open_storage(gcs_url, {"read_timeout": 7})
    with first.open_writer("k") as f:
        f.write(b"x")
    second = objio.open_storage(f"{gcs_url}/other", {"read_timeout": 7})  # as save_var_collection does per file
    assert _read(first, "k") == b"x" and second.list() == []
    assert len(loads) == 1
    objio.open_storage(gcs_url, {"read_timeout": 8})  # other options: their own credentials and pool
    objio.open_storage(gcs_url, {"read_timeout": 7, "token": google.auth.credentials.AnonymousCredentials()})
    assert len(loads) == 3


def test_loading_the_plugin_imports_no_client_and_opening_a_storage_changes_no_environment(gcs_url: str) -> None:
    code = (
        "import os, sys, objio; before = dict(os.environ); "
        "objio._host.get_plugin_manager(); "
        "clients = {'google.auth', 'requests', 'gcsfs', 'aiohttp'} & set(sys.modules); "
        "assert not clients, f'loading the plugin imported {clients}'; "
        f"objio.open_storage({gcs_url!r}).list(); "
        "assert 'google.auth' in sys.modules; "
        "assert dict(os.environ) == before, set(os.environ) ^ set(before)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_bucket_is_not_found(gcs_endpoint: str) -> None:
    storage = objio.open_storage("gs://no-such-bucket/run")
    with pytest.raises(ObjectNotFoundError, match="gs://no-such-bucket/run"):
        storage.list()
    with pytest.raises(ObjectNotFoundError, match="gs://no-such-bucket/run/k"):
        with storage.open_writer("k") as f:
            f.write(b"x")


def test_keys_with_characters_that_need_quoting(gcs_url: str) -> None:
    storage = objio.open_storage(gcs_url, SMALL_CHUNKS)
    keys = ["a b/ü ñ.npz", "plus+sign", "q?uestion#hash&amp", "per%20cent", "semi;colon=eq", "tilde~star*"]
    for i, key in enumerate(keys):
        with storage.open_writer(key) as f:
            f.write(_payload(300 * KIB if i % 2 else 10, seed=i))  # both upload paths
    assert storage.list() == sorted(keys)
    for i, key in enumerate(keys):
        assert _read(storage, key) == _payload(300 * KIB if i % 2 else 10, seed=i)
        storage.delete(key)
    assert storage.list() == []


# -- writes ---------------------------------------------------------------------------------------


def test_small_data_is_one_single_request_upload(gcs_url: str, http_log: list[Any]) -> None:
    storage = objio.open_storage(gcs_url)
    with storage.open_writer("small", if_absent=True) as f:
        f.write(b"x" * 1000)
    assert [(c.method, c.params.get("uploadType"), c.params.get("ifGenerationMatch")) for c in http_log] == [
        ("POST", "multipart", "0")
    ]


def test_large_data_streams_through_a_resumable_session(gcs_url: str, http_log: list[Any]) -> None:
    storage = objio.open_storage(gcs_url, SMALL_CHUNKS)
    data = _payload(5 * 256 * KIB + 12345)
    with storage.open_writer("big") as f:
        for start in range(0, len(data), 100_003):
            f.write(data[start : start + 100_003])
        f.flush()
        # Four full chunks are on the server, yet nothing is visible before the upload finalises.
        assert not storage.exists("big") and storage.list() == []
    assert _read(storage, "big") == data

    initiate, *chunks = [c for c in http_log if c.method in ("POST", "PUT")]
    assert (initiate.method, initiate.params["uploadType"]) == ("POST", "resumable")
    ranges = [c.headers["Content-Range"] for c in chunks]
    assert ranges == [f"bytes {i * 256 * KIB}-{(i + 1) * 256 * KIB - 1}/*" for i in range(5)] + [
        f"bytes {5 * 256 * KIB}-{len(data) - 1}/{len(data)}"
    ]
    assert [c.status for c in chunks] == [308] * 5 + [200]
    assert all(c.body_bytes == 256 * KIB for c in chunks[:-1])


def test_memory_stays_within_two_chunks(gcs_url: str) -> None:
    storage = objio.open_storage(gcs_url, {"chunk_size": MIB})
    data = memoryview(_payload(24 * MIB))
    tracemalloc.start()
    try:
        with storage.open_writer("big") as f:
            for start in range(0, len(data), MIB // 2):
                f.write(data[start : start + MIB // 2])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * MIB, f"writing 24 MiB in 1 MiB chunks peaked at {peak / MIB:.1f} MiB"
    assert storage.size("big") == len(data)


def _cancels(http_log: list[Any]) -> list[tuple[str, int]]:
    """(upload_id, status) of each DELETE sent to a resumable session."""
    return [(c.url.split("upload_id=")[-1], c.status) for c in http_log if c.method == "DELETE"]


def _session_id(http_log: list[Any]) -> str:
    initiate = next(c for c in http_log if c.params.get("uploadType") == "resumable")
    return str(initiate.response_headers["Location"].split("upload_id=")[-1])


# A cancelled session is answered 499 by GCS and by the emulator alike. Only real GCS then refuses
# the session's further chunks (fake-gcs-server v1.54 keeps accepting them), so what is checked here
# is that the writer cancels and never finalises, and that no object appears.


def test_exception_cancels_the_resumable_session(gcs_url: str, http_log: list[Any]) -> None:
    storage = objio.open_storage(gcs_url, SMALL_CHUNKS)
    with pytest.raises(KeyError):
        with storage.open_writer("obj") as f:
            f.write(_payload(MIB + 1))
            f.flush()
            raise KeyError("interrupted")
    assert _cancels(http_log) == [(_session_id(http_log), 499)]
    assert not any("/*" not in c.headers.get("Content-Range", "/*") for c in http_log), "finalised"
    assert not storage.exists("obj") and storage.list() == []


def test_dropped_writer_cancels_its_session(gcs_url: str, http_log: list[Any]) -> None:
    storage = objio.open_storage(gcs_url, SMALL_CHUNKS)
    writer = storage.open_writer("obj")
    stream = writer.__enter__()
    stream.write(_payload(MIB + 1))
    stream.flush()
    del writer, stream
    gc.collect()
    deadline = time.monotonic() + 10  # the cancel is sent without blocking the garbage collector
    while not _cancels(http_log) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _cancels(http_log) == [(_session_id(http_log), 499)]
    assert not storage.exists("obj") and storage.list() == []


def test_fifty_mib_object_streams_and_reads_back(gcs_url: str) -> None:
    storage = objio.open_storage(gcs_url, {"chunk_size": 16 * MIB})
    data = _payload(50 * MIB + 3, seed=5)
    view = memoryview(data)
    with storage.open_writer("ckpt/huge.bin", if_absent=True) as f:
        for start in range(0, len(data), 4 * MIB + 1):
            f.write(view[start : start + 4 * MIB + 1])
    assert storage.size("ckpt/huge.bin") == len(data)
    with storage.open_reader("ckpt/huge.bin") as f:
        f.seek(-1000, os.SEEK_END)
        assert f.read() == data[-1000:]
        f.seek(0)
        assert f.read() == data


# -- create-only on each upload path ---------------------------------------------------------------


def test_create_only_refuses_a_large_write_before_uploading_it(gcs_url: str, http_log: list[Any]) -> None:
    storage = objio.open_storage(gcs_url, SMALL_CHUNKS)
    with storage.open_writer("obj") as f:
        f.write(b"first")
    with pytest.raises(ObjectExistsError, match="obj"):
        with storage.open_writer("obj", if_absent=True) as f:
            for _ in range(8):
                f.write(_payload(256 * KIB))
    assert _read(storage, "obj") == b"first"
    assert not any(c.params.get("uploadType") == "resumable" for c in http_log), "no session should have started"


# -- reads ----------------------------------------------------------------------------------------


def test_reads_fetch_only_the_bytes_asked_for(gcs_url: str) -> None:
    storage = objio.open_storage(gcs_url)
    data = _payload(8 * MIB)
    with storage.open_writer("obj") as f:
        f.write(data)
    with storage.open_reader("obj") as f:
        f.seek(5 * MIB)
        assert f.read(1000) == data[5 * MIB : 5 * MIB + 1000]
        assert f.requests == 1 and f.fetched_bytes <= READ_BUFFER


@pytest.mark.parametrize("ranges", [1, 4])
def test_a_large_read_is_split_into_read_concurrency_ranges(gcs_url: str, http_log: list[Any], ranges: int) -> None:
    storage = objio.open_storage(gcs_url, {"read_concurrency": ranges})
    data = _payload(8 * MIB)
    with storage.open_writer("obj") as f:
        f.write(data)
    http_log.clear()
    with storage.open_reader("obj") as f:
        assert f.read() == data
    media = sorted(c.headers["Range"] for c in http_log if c.params.get("alt") == "media")
    assert len(media) == ranges
    assert sum(c.received_bytes for c in http_log if c.params.get("alt") == "media") == len(data)


def test_loading_some_variables_fetches_only_their_bytes(gcs_url: str, http_log: list[Any]) -> None:
    url = f"{gcs_url}/model.npz"
    n = 2 * MIB // 4
    full = objio.VarCollection({f"(Net).w{i}": objio.TrainVar(np.full(n, i, np.float32)) for i in range(4)})
    objio.save_var_collection(url, full)
    http_log.clear()
    part = objio.VarCollection({"(Net).w2": objio.TrainVar(np.zeros(n, np.float32))})
    objio.load_var_collection(url, part)
    assert float(np.asarray(part["(Net).w2"].value)[0]) == 2
    fetched = sum(c.received_bytes for c in http_log if c.params.get("alt") == "media")
    # Its 2 MiB, plus the blocks around the zip directory and each member's header.
    assert 2 * MIB <= fetched < 2 * MIB + 4 * READ_BUFFER, fetched


def test_the_ranges_of_a_large_read_are_fetched_at_once(gcs_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ranged GET waits until all four are under way: a sequential reader would time out."""
    from objio_gcs.transport import Response, Transport

    storage = objio.open_storage(gcs_url, {"read_concurrency": 4})
    data = _payload(8 * MIB)
    with storage.open_writer("obj") as f:
        f.write(data)
    together = threading.Barrier(4, timeout=30)
    met: list[bool] = []
    original = Transport.attempt

    def meeting(self: Transport, method: str, url: str, **kwargs: Any) -> Response:
        if (kwargs.get("params") or {}).get("alt") == "media":
            try:
                together.wait()
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(Transport, "attempt", meeting)
    with storage.open_reader("obj") as f:
        assert f.read() == data
    assert met == [True] * 4


@pytest.mark.parametrize("wanted", [(5, 6), (3, 15)], ids=["side-by-side", "apart"])
def test_loading_2_of_20_variables_fetches_only_their_bytes(
    gcs_url: str, http_log: list[Any], wanted: tuple[int, int]
) -> None:
    url = f"{gcs_url}/model.npz"
    member = 2 * MIB
    full = objio.VarCollection({f"(Net).w{i}": objio.TrainVar(np.full(member // 4, i, np.float32)) for i in range(20)})
    objio.save_var_collection(url, full)
    http_log.clear()
    part = objio.VarCollection({f"(Net).w{i}": objio.TrainVar(np.zeros(member // 4, np.float32)) for i in wanted})
    objio.load_var_collection(url, part)
    for i in wanted:
        np.testing.assert_array_equal(np.asarray(part[f"(Net).w{i}"].value), np.full(member // 4, i, np.float32))
    media = [c for c in http_log if c.params.get("alt") == "media"]
    fetched = sum(c.received_bytes for c in media)
    # The members, the block with the zip directory, the first block (names.npy), and a block
    # around each member's header: no read-ahead beyond what is wanted.
    assert 2 * member < fetched <= 2 * member + 4 * READ_BUFFER, fetched
    assert len(media) <= 6, [c.headers["Range"] for c in media]


def test_a_reader_sees_one_version_or_fails(gcs_url: str) -> None:
    storage = objio.open_storage(gcs_url)
    with storage.open_writer("obj") as f:
        f.write(b"1" * MIB)
    with storage.open_reader("obj") as f:
        assert f.read(10) == b"1" * 10
        with storage.open_writer("obj") as w:
            w.write(b"2" * MIB)
        f.seek(MIB // 2)  # outside what is buffered
        with pytest.raises(ChangedWhileReadingError, match=r"obj was replaced while it was being read \(generation"):
            f.read(10)
        storage.delete("obj")
        f.seek(MIB // 4)
        with pytest.raises(ObjectNotFoundError, match="obj was deleted while it was being read"):
            f.read(10)
