"""Errors: S3's failures come out as objio's errors (the builtin a caller catches), with the cause
chained and a message that names the object and the fix; throttling is retried; a dead endpoint
fails within a bounded time."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import s3fs.errors
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

import objio
from objio.errors import (
    ChangedWhileReadingError,
    ObjectExistsError,
    ObjectNotFoundError,
    ObjioError,
    StorageError,
    StoragePermissionError,
    StorageUnavailableError,
)
from objio_s3 import S3OptionsError
from objio_s3.errors import Op, translate

URL = "s3://bucket/run/ckpt.npz"


def _client_error(code: str, status: int) -> ClientError:
    response = {
        "Error": {"Code": code, "Message": f"message of {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "op", "expected", "text"),
    [
        ("NoSuchKey", 404, Op.OTHER, ObjectNotFoundError, "s3://bucket/run/ckpt.npz does not exist"),
        ("404", 404, Op.OTHER, ObjectNotFoundError, "does not exist"),
        ("NoSuchBucket", 404, Op.OTHER, ObjectNotFoundError, "the bucket 'bucket' does not exist"),
        ("AccessDenied", 403, Op.OTHER, StoragePermissionError, "access denied to s3://bucket/run/ckpt.npz"),
        ("403", 403, Op.READ, StoragePermissionError, "check the credentials"),
        ("InvalidAccessKeyId", 403, Op.OTHER, StoragePermissionError, "InvalidAccessKeyId"),
        ("PreconditionFailed", 412, Op.COMMIT, ObjectExistsError, "already exists and this write was create-only"),
        ("PreconditionFailed", 412, Op.READ, ChangedWhileReadingError, "replaced while it was being read"),
        ("SlowDown", 503, Op.OTHER, StorageUnavailableError, "after retries with backoff (SlowDown"),
        ("InternalError", 500, Op.OTHER, StorageUnavailableError, "retry later"),
        ("InvalidRequest", 400, Op.OTHER, StorageError, "S3 refused a request for s3://bucket/run/ckpt.npz"),
    ],
)
def test_client_errors(code: str, status: int, op: Op, expected: type, text: str) -> None:
    raw = _client_error(code, status)
    # Both shapes: botocore's error, and the OSError s3fs makes of it (the ClientError as its cause).
    for error in (raw, s3fs.errors.translate_boto_error(raw)):
        translated = translate(error, URL, endpoint="http://127.0.0.1:1", op=op)
        assert type(translated) is expected
        assert text in str(translated)
        assert translated.url == URL


def test_error_types_are_the_builtins_callers_catch() -> None:
    assert isinstance(translate(_client_error("NoSuchKey", 404), URL), FileNotFoundError)
    assert isinstance(translate(_client_error("AccessDenied", 403), URL), PermissionError)
    assert isinstance(translate(_client_error("412", 412), URL, op=Op.COMMIT), FileExistsError)
    assert isinstance(translate(_client_error("SlowDown", 503), URL), ConnectionError)


def test_transport_and_credential_errors() -> None:
    down = translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), URL, endpoint="http://127.0.0.1:1")
    assert isinstance(down, StorageUnavailableError)
    assert "could not reach the S3 endpoint http://127.0.0.1:1" in str(down)
    slow = translate(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), URL)
    assert isinstance(slow, StorageUnavailableError)
    missing = translate(NoCredentialsError(), URL)
    assert isinstance(missing, StoragePermissionError)
    assert "AWS_PROFILE" in str(missing) and "anon" in str(missing)


def test_missing_bucket(moto_endpoint: str) -> None:
    storage = objio.open_storage("s3://objio-no-such-bucket/run", {})
    with pytest.raises(ObjectNotFoundError, match="the bucket 'objio-no-such-bucket' does not exist") as caught:
        storage.list()
    assert caught.value.__cause__ is not None  # the cause is chained
    with pytest.raises(ObjectNotFoundError, match="does not exist"):
        with storage.open_writer("obj") as f:
            f.write(b"x")
    assert not storage.exists("obj")


def test_access_denied(bucket: str, fault_proxy: Any) -> None:
    storage = objio.open_storage(f"s3://{bucket}/run", {"endpoint_url": fault_proxy.endpoint})
    fault_proxy.fail("denied")
    with pytest.raises(StoragePermissionError, match=f"access denied to s3://{bucket}/run/obj"):
        with storage.open_writer("obj") as f:
            f.write(b"x")
    with pytest.raises(StoragePermissionError, match="AccessDenied"):
        storage.list()
    with pytest.raises(PermissionError):  # a HEAD answer has no body: only the status tells
        storage.open_reader("obj")


def test_throttling_is_retried_with_backoff(bucket: str, fault_proxy: Any) -> None:
    storage = objio.open_storage(f"s3://{bucket}/run", {"endpoint_url": fault_proxy.endpoint})
    fault_proxy.fail("slowdown", method="PUT", times=2)
    with storage.open_writer("obj") as f:
        f.write(b"saved after two SlowDown answers")
    assert [action for method, _, action in fault_proxy.seen if method == "PUT"] == ["slowdown", "slowdown", "forward"]
    with storage.open_reader("obj") as r:
        assert r.read() == b"saved after two SlowDown answers"


def test_throttling_that_never_stops_gives_up(bucket: str, fault_proxy: Any) -> None:
    options = {"endpoint_url": fault_proxy.endpoint, "config_kwargs": {"retries": {"max_attempts": 2}}}
    storage = objio.open_storage(f"s3://{bucket}/run", options)
    fault_proxy.fail("slowdown")
    start = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="SlowDown"):
        storage.list()
    assert time.monotonic() - start < 30
    assert len(fault_proxy.seen) == 3  # the first attempt and 2 retries


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_dead_endpoint_fails_in_bounded_time(closed_port: int) -> None:
    """Nothing listens there: botocore's default retries (5 attempts, backoff) and then a clear error."""
    endpoint = f"http://127.0.0.1:{closed_port}"
    storage = objio.open_storage("s3://bucket/run", {"endpoint_url": endpoint})
    start = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=f"could not reach the S3 endpoint {endpoint}"):
        storage.list()
    assert time.monotonic() - start < 60


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_an_endpoint_that_never_answers_times_out(black_hole: str) -> None:
    options = {
        "endpoint_url": black_hole,
        "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
    }
    storage = objio.open_storage("s3://bucket/run", options)
    start = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="timeout"):
        storage.size("obj")
    assert time.monotonic() - start < 20


@pytest.mark.parametrize(
    ("options", "text"),
    [
        ({"endpont_url": "http://x"}, "unknown storage option 'endpont_url'.*endpoint_url"),
        ({"part_size": 1 << 20}, "between 5 MiB and 5 GiB"),
        ({"max_in_flight": 0}, "'max_in_flight' must be a positive int"),
        ({"read_ahead": -1}, "'read_ahead' must be a non-negative int"),
        ({"request_timeout": 0}, "'request_timeout' must be a positive number"),
        ({"endpoint": "http://a", "endpoint_url": "http://b"}, "twice"),
    ],
)
def test_bad_options_are_refused(options: dict[str, Any], text: str) -> None:
    with pytest.raises(S3OptionsError, match=text) as caught:
        objio.open_storage("s3://bucket/run", options)
    assert isinstance(caught.value, ObjioError) and isinstance(caught.value, TypeError)


@pytest.mark.parametrize("url", ["s3://", "s3:///run", "s3://bucket/run?versionId=1"])
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="S3"):
        objio.open_storage(url, {})
