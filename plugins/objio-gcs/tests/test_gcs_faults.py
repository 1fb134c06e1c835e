"""A frozen (SIGSTOP) or killed fake-gcs-server in the middle of a save or a load (issue 8, item 5).

Each test runs its own emulator (never the shared one), storing objects on disk so that a restarted
server shows what the killed one had committed. The fault strikes at a deterministic point: a hook
on the transport freezes or kills the server just before a chosen request goes out. Every
operation must end with :class:`~objio.errors.StorageUnavailableError` itself (not a wrapper, not
:class:`~objio.errors.CorruptFileError`), within its documented bound, and leave no object behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import objio
from objio.errors import StorageUnavailableError

#: The ``private_emulator`` fixture's emulator (tests/conftest.py cannot be imported by name).
Emulator = Any

KIB = 1 << 10
MIB = 1 << 20
#: Short bounds, so that each fault gives up in seconds: 1 s to connect or to hear the next bytes,
#: retries for 2 s after the first failure. 256 KiB chunks, so a save of a few MiB is a resumable
#: upload of many requests.
FAST = {"connect_timeout": 1, "read_timeout": 1, "retry_deadline": 2, "chunk_size": 256 * KIB}
#: What a hang would look like: far beyond the bound above (about 2 s + 1 s + a cancel's 2 s).
HANG = 120.0


def _collection(mib: int) -> objio.VarCollection:
    n = mib * MIB // 4 // 4
    return objio.VarCollection({f"(Net).w{i}": objio.TrainVar(np.full(n, i, np.float32)) for i in range(4)})


def _ends(fn: Callable[[], object]) -> BaseException | None:
    """Run ``fn``; what it raised. Fails the test if it is still running after :data:`HANG` seconds."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            outcome.append(e)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG)
    assert outcome, f"still running after {HANG} s: a hang, not a bounded failure"
    return outcome[0]


@pytest.fixture
def strike_before(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[..., bool], Callable[[], None]], None]]:
    """``strike_before(matches, fault)``: run ``fault()`` once, just before the first request for
    which ``matches(method, url, params, headers)`` is true (a deterministic pause point)."""
    from objio_gcs.transport import Response, Transport

    original = Transport.attempt
    armed: list[tuple[Callable[..., bool], Callable[[], None]]] = []
    lock = threading.Lock()

    def attempt(self: Transport, method: str, url: str, **kwargs: Any) -> Response:
        with lock:
            if armed and armed[0][0](method, url, kwargs.get("params") or {}, kwargs.get("headers") or {}):
                armed.pop()[1]()
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(Transport, "attempt", attempt)
    yield lambda matches, fault: armed.append((matches, fault))


def _nth_chunk(n: int) -> Callable[..., bool]:
    """Matches the request that sends the ``n``-th chunk (1, 2, ...) of a resumable upload."""
    seen = [0]

    def matches(method: str, url: str, params: Any, headers: Any) -> bool:
        if method == "PUT" and "/*" in headers.get("Content-Range", "") and headers["Content-Range"] != "bytes */*":
            seen[0] += 1
        return seen[0] == n

    return matches


def _nth_media_get(n: int) -> Callable[..., bool]:
    """Matches the ``n``-th ranged read (1, 2, ...)."""
    seen = [0]

    def matches(method: str, url: str, params: Any, headers: Any) -> bool:
        if method == "GET" and params.get("alt") == "media":
            seen[0] += 1
        return seen[0] == n

    return matches


def _url(emulator: Emulator) -> str:
    return f"gs://{emulator.bucket}/run"


def _options(emulator: Emulator) -> dict[str, Any]:
    return {"endpoint": emulator.endpoint, **FAST}


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_a_save_whose_endpoint_dies_midway_fails_typed_and_leaves_nothing(
    private_emulator: Emulator, strike_before: Any, fault: str
) -> None:
    url = f"{_url(private_emulator)}/ckpt.npz"
    strike_before(_nth_chunk(3), getattr(private_emulator, fault))
    error = _ends(lambda: objio.save_var_collection(url, _collection(4), storage_options=_options(private_emulator)))
    assert type(error) is StorageUnavailableError, repr(error)
    assert f"could not write {url}: {private_emulator.endpoint} did not answer" in str(error)

    # Restart on the same port and folder: it shows what the server had committed. A frozen one is
    # killed first, not thawed: fake-gcs-server would then answer the status query queued by a retry
    # (Content-Range: bytes */*) by finalising the session with what it holds; real GCS answers 308.
    if fault == "freeze":
        private_emulator.kill()
    private_emulator.start()
    assert objio.open_storage(_url(private_emulator), {"endpoint": private_emulator.endpoint}).list() == []


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_a_load_whose_endpoint_dies_midway_fails_typed_and_changes_nothing(
    private_emulator: Emulator, strike_before: Any, fault: str
) -> None:
    url = f"{_url(private_emulator)}/ckpt.npz"
    objio.save_var_collection(url, _collection(4), storage_options=_options(private_emulator))
    target = _collection(4)
    for var in target.values():
        var.assign(np.full_like(np.asarray(var.value), -1))
    strike_before(_nth_media_get(3), getattr(private_emulator, fault))
    error = _ends(lambda: objio.load_var_collection(url, target, storage_options=_options(private_emulator)))
    assert type(error) is StorageUnavailableError, repr(error)
    assert f"could not read {url}: {private_emulator.endpoint} did not answer" in str(error)
    assert all(float(np.asarray(var.value)[0]) == -1 for var in target.values())  # the model is as it was


def test_cleanup_cancels_a_session_whose_cancel_failed(
    private_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, http_log: Any
) -> None:
    import requests

    from objio_gcs.transport import Transport

    storage = objio.open_storage(_url(private_emulator), _options(private_emulator))
    attempt = Transport.attempt
    refused: list[str] = []

    def endpoint_gone_for_the_first_cancel(self: Transport, method: str, url: str, **kwargs: Any) -> Any:
        if method == "DELETE" and not refused:
            refused.append(url)
            raise requests.ConnectionError("the endpoint went away")
        return attempt(self, method, url, **kwargs)

    monkeypatch.setattr(Transport, "attempt", endpoint_gone_for_the_first_cancel)
    with pytest.raises(KeyError):
        with storage.open_writer("big") as f:
            f.write(bytes(MIB))  # a resumable session is open
            raise KeyError("the save failed")
    assert len(refused) == 1  # the discard tried to cancel, and could not

    assert storage.cleanup(older_than=3600) == 0  # not old enough yet
    assert storage.cleanup(older_than=0) == 1
    assert storage.cleanup(older_than=0) == 0  # done once
    cancels = [(c.url, c.status) for c in http_log if c.method == "DELETE"]
    assert cancels == [(refused[0], 499)]  # GCS's answer to a cancelled session
    assert storage.list() == []
