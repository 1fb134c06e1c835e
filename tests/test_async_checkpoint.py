"""Checkpoint(async_save=True): save() snapshots and returns, a background thread writes (issue 10, point 4).

The background write is held back where a test needs it to run later (after a donation, after an
in-place change) by a gate: an event the write waits on, set by the test. The gate's timeout only
keeps a broken test from hanging the run; no test relies on time passing.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio import Checkpoint, StateVar, TrainRef, TrainVar, VarCollection
from objio.errors import ObjectExistsError
from objio.io import checkpoint
from objio.io.background import BackgroundWrite
from objio.io.save_load import save_var_collection
from objio.io.snapshot import SnapshotVar

GATE_TIMEOUT_S = 60.0


def _vc(value: float = 0.0, size: int = 4) -> VarCollection:
    return VarCollection({"w": TrainVar(jnp.full((size,), value, jnp.float32))})


def _files(folder: Path) -> list[str]:
    """The visible files of ``folder`` (a write in progress is a hidden temp file)."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def _gated(gate: threading.Event, seen: list[Any] | None = None) -> type[Checkpoint]:
    """A Checkpoint whose SAVE_FN waits for ``gate`` before writing (and records the collection it got)."""

    def save_fn(file: Any, vc: Any, *, metadata: dict[str, Any] | None = None) -> None:
        if seen is not None:
            seen.append(vc)
        assert gate.wait(GATE_TIMEOUT_S), "the test never opened the gate"
        save_var_collection(file, vc, metadata=metadata)

    class Gated(Checkpoint):
        SAVE_FN = staticmethod(save_fn)

    return Gated


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()  # a failed test must not leave a write waiting


@pytest.fixture
def gated_save_tree(monkeypatch: pytest.MonkeyPatch, gate: threading.Event) -> threading.Event:
    """Hold back the background write of every pytree checkpoint until the gate opens."""
    real = checkpoint.save_tree

    def save_tree(*args: Any, **kwargs: Any) -> None:
        assert gate.wait(GATE_TIMEOUT_S), "the test never opened the gate"
        real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_tree", save_tree)
    return gate


def test_save_returns_before_the_write_and_wait_commits_it(tmp_path: Path, gate: threading.Event) -> None:
    ckpt = _gated(gate)(tmp_path, keep_ckpts=5, async_save=True)
    ckpt.save(_vc(1.0), 1)
    assert not (tmp_path / "ckpt" / "0000000001.npz").exists()  # save() returned; the write waits at the gate
    gate.set()
    ckpt.wait()
    assert _files(tmp_path / "ckpt") == ["0000000001.npz"]
    vc = _vc()
    assert ckpt.restore(vc) == (1, f"{tmp_path}/ckpt/0000000001.npz")
    assert vc["w"].value.tolist() == [1.0] * 4
    ckpt.wait()  # nothing in flight: returns at once


def test_wait_returns_after_retention(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=2, async_save=True)
    for idx in (1, 2, 3):
        ckpt.save(_vc(float(idx)), idx)
    ckpt.wait()
    assert _files(tmp_path / "ckpt") == ["0000000002.npz", "0000000003.npz"]


@pytest.mark.parametrize("method", ["indices", "restore", "restore_tree", "metadata", "best", "save"])
def test_every_method_that_reads_the_logdir_waits_for_the_save_in_flight(
    tmp_path: Path, method: str, gated_save_tree: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=5, best_key="loss", async_save=True)
    ckpt.save({"w": jnp.full(3, 7.0)}, 1, metadata={"loss": 0.5})
    real_wait = BackgroundWrite.wait

    def wait(self: BackgroundWrite) -> None:  # the write can finish only once something waits for it
        gated_save_tree.set()
        real_wait(self)

    monkeypatch.setattr(BackgroundWrite, "wait", wait)
    calls: dict[str, Callable[[], Any]] = {
        "indices": ckpt.indices,
        "restore": lambda: ckpt.restore(VarCollection({"w": TrainVar(jnp.zeros(3))}))[0],
        "restore_tree": lambda: ckpt.restore_tree()[1]["w"].tolist(),
        "metadata": ckpt.metadata,
        "best": ckpt.best,
        "save": lambda: ckpt.save({"w": jnp.zeros(3)}, 2),
    }
    result = calls[method]()
    expected = {"indices": [1], "restore": 1, "restore_tree": [7.0] * 3, "metadata": {"loss": 0.5}, "best": 1}
    if method == "save":
        ckpt.wait()
        assert ckpt.indices() == [1, 2]
    else:
        assert result == expected[method]


def test_one_save_at_a_time_in_the_order_called(tmp_path: Path) -> None:
    log: list[tuple[str, int]] = []

    def save_fn(file: Any, vc: Any) -> None:
        idx = int(vc["w"].value[0])
        log.append(("start", idx))
        save_var_collection(file, vc)
        log.append(("end", idx))

    class Logged(Checkpoint):
        SAVE_FN = staticmethod(save_fn)

    ckpt = Logged(tmp_path, keep_ckpts=0, async_save=True)
    for idx in range(1, 5):
        ckpt.save(_vc(float(idx), size=1 << 18), idx)
    ckpt.wait()
    assert log == [(event, idx) for idx in range(1, 5) for event in ("start", "end")]
    assert ckpt.indices() == [1, 2, 3, 4]


def test_a_failed_save_is_raised_by_wait_once_naming_the_checkpoint(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=5, async_save=True)
    ckpt.save(_vc(1.0), 1)
    ckpt.save(_vc(2.0), 1)  # the index exists: the background write is refused, create-only
    with pytest.raises(ObjectExistsError) as info:
        ckpt.wait()
    path = f"{tmp_path}/ckpt/0000000001.npz"
    assert info.value.__notes__ == [f"(raised by the save of checkpoint 1 to {path}, which ran in the background)"]
    ckpt.wait()  # raised once
    vc = _vc()
    ckpt.restore(vc)
    assert vc["w"].value.tolist() == [1.0] * 4  # the first one, untouched


def test_the_next_save_raises_an_unawaited_error_and_does_not_start(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=5, async_save=True)
    ckpt.save(_vc(1.0), 1)
    ckpt.save(_vc(2.0), 1)
    with pytest.raises(ObjectExistsError, match="0000000001.npz"):
        ckpt.save(_vc(3.0), 3)
    assert ckpt.indices() == [1]  # 3 was not started
    ckpt.save(_vc(3.0), 3)
    ckpt.wait()
    assert ckpt.indices() == [1, 3]


def test_restore_raises_an_unawaited_error(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=5, async_save=True)
    ckpt.save(_vc(1.0), 1)
    ckpt.save(_vc(2.0), 1)
    with pytest.raises(ObjectExistsError):
        ckpt.restore(_vc())
    assert ckpt.restore(_vc())[0] == 1


def test_argument_errors_are_raised_by_save_itself(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path, keep_ckpts=5, async_save=True)
    with pytest.raises(TypeError, match="must be an int"):
        ckpt.save(_vc(), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ckpt.save(_vc(), 1, metadata={"x": object()})
    with pytest.raises(TypeError, match="is a variable"):
        ckpt.save({"w": TrainVar(jnp.zeros(2)), "b": jnp.zeros(2)}, 1)
    with pytest.raises(TypeError, match="holds no arrays"):
        ckpt.save({"name": "x"}, 1)
    ckpt.wait()
    assert ckpt.indices() == []


def test_async_and_sync_saves_write_the_same_bytes(tmp_path: Path) -> None:
    shared = TrainVar(jnp.arange(6.0).reshape(2, 3))
    state = StateVar(np.arange(4, dtype=np.int32))
    vc = VarCollection({"a": shared, "b": shared, "ref": TrainRef(shared), "s": state})
    tree = {"x": jnp.ones((2, 2), jnp.bfloat16), "n": np.arange(3.0), "k": 3, "name": "ignored"}
    sync, background = Checkpoint(tmp_path / "sync", keep_ckpts=0), Checkpoint(tmp_path / "async", 0, async_save=True)
    for ckpt in (sync, background):
        ckpt.save(vc, 1, metadata={"step": 1})
        ckpt.save(tree, 2)
    background.wait()
    for idx in (1, 2):
        assert Path(background.path(idx)).read_bytes() == Path(sync.path(idx)).read_bytes()


def test_a_custom_save_fn_gets_a_read_only_snapshot_with_every_name(tmp_path: Path, gate: threading.Event) -> None:
    shared = TrainVar(jnp.zeros(2))
    vc = VarCollection({"a": shared, "b": shared, "ref": TrainRef(shared), "s": StateVar(np.ones(2))})
    seen: list[Any] = []
    ckpt = _gated(gate, seen)(tmp_path, keep_ckpts=0, async_save=True)
    ckpt.save(vc, 1)
    gate.set()
    ckpt.wait()
    (snapshot,) = seen
    assert isinstance(snapshot, VarCollection) and list(snapshot.keys()) == ["a", "b", "ref", "s"]
    assert snapshot["a"] is snapshot["b"] is snapshot["ref"] and isinstance(snapshot["a"], SnapshotVar)
    with pytest.raises(TypeError, match="read-only"):
        snapshot["a"].assign(jnp.ones(2))
    assert shared.value.tolist() == [0.0, 0.0]


def _donating_step() -> Callable[[jax.Array], jax.Array]:
    return jax.jit(lambda x: x * 2.0 + 1.0, donate_argnums=0)


def test_a_pytree_snapshot_survives_donation_of_its_arrays(tmp_path: Path, gated_save_tree: threading.Event) -> None:
    params = {f"w{i}": jnp.full((256, 256), float(i), jnp.float32) for i in range(4)}
    ckpt = Checkpoint(tmp_path, keep_ckpts=0, async_save=True)
    ckpt.save(params, 1)
    step = _donating_step()
    params = {name: step(value) for name, value in params.items()}  # donated while the write waits
    params = {name: step(value) for name, value in params.items()}  # and their buffers reused
    gated_save_tree.set()
    _, restored = ckpt.restore_tree()
    for i in range(4):
        assert np.array_equal(restored[f"w{i}"], np.full((256, 256), float(i), np.float32))
        assert float(params[f"w{i}"][0, 0]) == (i * 2.0 + 1.0) * 2.0 + 1.0  # the training step ran as usual


def test_a_collection_snapshot_survives_donation_of_its_values(tmp_path: Path, gate: threading.Event) -> None:
    vc = VarCollection({f"w{i}": TrainVar(jnp.full((256, 256), float(i), jnp.float32)) for i in range(4)})
    ckpt = _gated(gate)(tmp_path, keep_ckpts=0, async_save=True)
    ckpt.save(vc, 1)
    step = _donating_step()
    for var in vc.values():
        var.assign(step(var.value))
    gate.set()
    fresh = VarCollection({f"w{i}": TrainVar(jnp.zeros((256, 256), jnp.float32)) for i in range(4)})
    ckpt.restore(fresh)
    assert [float(v.value[0, 0]) for v in fresh.values()] == [0.0, 1.0, 2.0, 3.0]
    assert [float(v.value[0, 0]) for v in vc.values()] == [1.0, 3.0, 5.0, 7.0]


def test_numpy_values_changed_in_place_after_save_are_saved_as_they_were(
    tmp_path: Path, gated_save_tree: threading.Event, gate: threading.Event
) -> None:
    tree = {"a": np.arange(1000, dtype=np.float32), "nested": [np.ones((3, 3))]}
    ckpt = Checkpoint(tmp_path / "tree", keep_ckpts=0, async_save=True)
    ckpt.save(tree, 1)
    tree["a"][:] = -1.0
    tree["nested"][0] *= 5
    state = StateVar(np.zeros(8, np.int64))
    collection_ckpt = _gated(gate)(tmp_path / "vc", keep_ckpts=0, async_save=True)
    collection_ckpt.save(VarCollection({"s": state}), 1)
    state.value[:] = 9  # a StateVar holding a NumPy array, changed in place
    gated_save_tree.set()
    _, restored = ckpt.restore_tree()
    assert np.array_equal(restored["a"], np.arange(1000, dtype=np.float32))
    assert np.array_equal(restored["nested"][0], np.ones((3, 3)))
    back = VarCollection({"s": StateVar(np.full(8, -1, np.int64))})
    collection_ckpt.restore(back)
    assert np.asarray(back["s"].value).tolist() == [0] * 8


def test_a_progress_callback_is_called_from_the_background_thread(tmp_path: Path) -> None:
    threads: list[str] = []

    def progress(done: int, total: int, name: str) -> None:
        threads.append(threading.current_thread().name)

    ckpt = Checkpoint(tmp_path, keep_ckpts=0, async_save=True, progress=progress)
    ckpt.save(_vc(), 1)
    ckpt.wait()
    assert threads and set(threads) == {f"objio: the save of checkpoint 1 to {ckpt.path(1)}"}


def test_no_automatic_bar_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(objio.progress, "_interactive", lambda stream: True)  # as if a person watched
    monkeypatch.setattr(objio.progress, "AUTO_DELAY_S", 0.0)
    Checkpoint(tmp_path / "sync", keep_ckpts=0).save(_vc(), 1)
    assert "0000000001.npz" in capsys.readouterr().err  # the bar a synchronous save draws
    background = Checkpoint(tmp_path / "async", keep_ckpts=0, async_save=True)
    background.save(_vc(), 1)
    background.wait()
    assert capsys.readouterr().err == ""


def test_a_multi_process_job_refuses_async_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "in_multi_process_job", lambda: True)
    ckpt = Checkpoint(tmp_path, keep_ckpts=0, async_save=True)
    with pytest.raises(NotImplementedError, match="async_save=False"):
        ckpt.save(_vc(), 1)
    assert not (tmp_path / "ckpt").exists()


def test_memory_backend(gate: threading.Event) -> None:
    ckpt = _gated(gate)("memory://async-run", keep_ckpts=1, async_save=True)
    ckpt.save(_vc(1.0), 1)
    gate.set()
    ckpt.save(_vc(2.0), 2)
    assert ckpt.indices() == [2]


# The write goes through a thread pool, as remote backends' HTTP clients do: pools refuse new work
# once the interpreter starts shutting down, so the pending save must be settled before that.
_EXITS_AT_ONCE = """
import concurrent.futures
import sys
import jax.numpy as jnp
import objio

def save_in_a_pool(file, vc):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(objio.io.save_var_collection, file, vc).result()

class PooledCheckpoint(objio.Checkpoint):
    SAVE_FN = staticmethod(save_in_a_pool)

logdir, idx = sys.argv[1], int(sys.argv[2])
vc = objio.VarCollection({f"w{i}": objio.TrainVar(jnp.full((1 << 20,), float(idx), jnp.float32)) for i in range(8)})
PooledCheckpoint(logdir, keep_ckpts=1, async_save=True).save(vc, idx)
print("save returned", flush=True)
"""


def test_a_process_that_exits_right_after_save_leaves_a_complete_checkpoint(tmp_path: Path) -> None:
    for idx in (1, 2):
        done = subprocess.run(
            [sys.executable, "-c", _EXITS_AT_ONCE, str(tmp_path), str(idx)], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "save returned\n" and "failed" not in done.stderr
    assert _files(tmp_path / "ckpt") == ["0000000002.npz"]  # written, committed, and retention applied
    vc = VarCollection({f"w{i}": TrainVar(jnp.zeros(1 << 20, jnp.float32)) for i in range(8)})
    assert Checkpoint(tmp_path, keep_ckpts=1).restore(vc)[0] == 2
    assert all(float(v.value[-1]) == 2.0 for v in vc.values())


def test_a_save_that_fails_unawaited_is_reported_on_stderr_at_exit(tmp_path: Path) -> None:
    Checkpoint(tmp_path, keep_ckpts=1).save(_vc(1.0), 1)
    done = subprocess.run(
        [sys.executable, "-c", _EXITS_AT_ONCE, str(tmp_path), "1"], capture_output=True, text=True, timeout=300
    )
    path = f"{tmp_path}/ckpt/0000000001.npz"
    assert f"objio: the save of checkpoint 1 to {path} failed, and nothing waited for it:" in done.stderr
    assert "ObjectExistsError" in done.stderr
    vc = _vc()
    Checkpoint(tmp_path, keep_ckpts=1).restore(vc)
    assert vc["w"].value.tolist() == [1.0] * 4


def test_objio_public_names() -> None:
    assert objio.Checkpoint is Checkpoint and callable(Checkpoint.wait)


def test_an_interrupted_wait_leaves_the_save_in_flight(
    tmp_path: Path, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt = _gated(gate)(tmp_path, keep_ckpts=0, async_save=True)
    ckpt.save(_vc(1.0), 1)
    real_wait = BackgroundWrite.wait
    waits: list[BackgroundWrite] = []

    def wait(self: BackgroundWrite) -> None:
        waits.append(self)
        if len(waits) == 1:
            raise KeyboardInterrupt  # Ctrl-C while the write is still held at the gate
        gate.set()
        real_wait(self)

    monkeypatch.setattr(BackgroundWrite, "wait", wait)
    with pytest.raises(KeyboardInterrupt):
        ckpt.wait()
    assert ckpt.indices() == [1]  # the next call waited for the same write, and it committed
    assert len(waits) == 2 and waits[0] is waits[1]
