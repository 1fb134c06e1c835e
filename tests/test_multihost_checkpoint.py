"""Checkpoint, save_tree and load_tree in multi-process jax.distributed jobs: the ordinary API, every process.

Each job runs this file as a script (``python test_multihost_checkpoint.py plan.json``) through the
process harness of tests/test_multihost.py (its ``run_job``, its model and shardings, its storage
wrapper that injects a fault into a part write). The processes call ``Checkpoint.save`` and
``Checkpoint.restore`` as a single process would; the pytest process then checks the storage, and
restores in a plain process. plugins/objio-s3/tests/test_s3_multihost_checkpoint.py runs the same
jobs and tests on S3 (moto).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

_HARNESS = Path(__file__).resolve().parent / "test_multihost.py"


def _harness() -> ModuleType:
    """tests/test_multihost.py as a module of its own, running this file as the jobs' worker."""
    spec = importlib.util.spec_from_file_location("objio_multihost_checkpoint_harness", _HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.SCRIPT = Path(__file__).resolve()
    return module


# ---------------------------------------------------------------- the worker (runs in each process)


def _state(harness: ModuleType, idx: int, kind: str) -> Any:
    """Checkpoint ``idx``'s model as globally sharded arrays: a VarCollection or a pytree (a nested dict)."""
    import jax

    import objio

    arrays = {
        name: jax.make_array_from_callback(
            value.shape, harness._sharding(harness.SAVE_TOPOLOGY, name), lambda index, value=value: value[index]
        )
        for name, value in harness.model(idx).items()
    }
    if kind == "tree":
        return {"params": {name: arrays[name] for name in ("x", "xn", "nx", "rep")}, "step": arrays["step"]}
    return objio.VarCollection(
        {name: (objio.StateVar if name == "step" else objio.TrainVar)(value) for name, value in arrays.items()}
    )


def _flat(state: Any) -> dict[str, Any]:
    import objio

    if isinstance(state, objio.VarCollection):
        return {name: var.value for name, var in state.items()}
    return {**state["params"], "step": state["step"]}


def _mismatches(harness: ModuleType, state: Any, idx: int) -> list[str]:
    """Where the restored ``state`` differs from checkpoint ``idx``'s model (or is not on its sharding)."""
    expected = harness.model(idx)
    found = []
    for name, array in _flat(state).items():
        if array.sharding != harness._sharding(harness.SAVE_TOPOLOGY, name) or array.dtype != expected[name].dtype:
            found.append(f"{name}: {array.sharding} {array.dtype}")
        for shard in array.addressable_shards:
            if np.asarray(shard.data).tobytes() != expected[name][shard.index].tobytes():
                found.append(f"{name}{shard.index}")
    return found


def _run_step(harness: ModuleType, ckpt: Any, step: dict[str, Any], process: int) -> dict[str, Any]:
    import objio

    result: dict[str, Any] = {"step": step["do"], "idx": step.get("idx")}
    if "url" in step:  # another run's folder
        ckpt = objio.Checkpoint(step["url"], keep_ckpts=None)
    try:
        if step["do"] == "save":
            ckpt._storage.fault = step.get("fault", {}).get(str(process))
            ckpt.save(_state(harness, step["idx"], step["kind"]), step["idx"], metadata={"idx": step["idx"]})
        elif step["kind"] == "tree":
            like = _state(harness, 0, "tree")
            result["restored"], tree = ckpt.restore_tree(like)
            result["mismatches"] = _mismatches(harness, tree, result["restored"])
        else:
            vc = _state(harness, 0, "vc")
            result["restored"] = ckpt.restore(vc)[0]
            result["mismatches"] = _mismatches(harness, vc, result["restored"])
        result["outcome"] = "ok"
    except Exception as e:  # noqa: BLE001 - the test asserts on the type and message
        result["outcome"] = type(e).__name__
        result["message"] = str(e)
    return result


def _worker(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    process = plan["process"]
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{plan['port']}", num_processes=plan["processes"], process_id=process, initialization_timeout=60
    )
    import objio

    harness = _harness()
    ckpt = objio.Checkpoint(plan["url"], keep_ckpts=2, multihost_timeout_s=10)
    ckpt._storage = harness._CountingStorage(ckpt._storage, process)  # to inject a fault into a part write
    results: list[dict[str, Any]] = []
    out = Path(plan["out"]) / f"{process}.json"
    for step in plan["steps"]:
        results.append(_run_step(harness, ckpt, step, process))
        out.with_suffix(".tmp").write_text(json.dumps(results))
        os.replace(out.with_suffix(".tmp"), out)
    if not any("kill" in step.get("fault", {}).values() for step in plan["steps"]):
        jax.distributed.shutdown()
    sys.stdout.flush()
    os._exit(0)  # a job whose peer was killed cannot shut jax.distributed down cleanly


if __name__ == "__main__":
    _worker(sys.argv[1])


# ---------------------------------------------------------------- the tests

import pytest  # noqa: E402 - the worker above runs without pytest's import machinery


def _key(idx: int) -> str:
    return f"ckpt/{idx:010d}.npz"


class Jobs:
    """Two jobs of 2 processes x 2 devices on one logdir, with keep_ckpts=2."""

    def __init__(self, folder: Path, url: str) -> None:
        import objio

        harness = _harness()
        self.folder = folder
        self.url = url
        self.storage = objio.open_storage(self.url)
        # Job A: three saves of a VarCollection (retention deletes 1), restore it, a pytree save (retention
        # deletes 2), restore it, then a save in which process 1 is killed half way through its part.
        self.a = harness.run_job(
            folder / "a",
            self.url,
            2,
            2,
            [
                {"do": "save", "idx": 1, "kind": "vc"},
                {"do": "save", "idx": 2, "kind": "vc"},
                {"do": "save", "idx": 3, "kind": "vc"},
                {"do": "restore", "kind": "vc"},
                {"do": "save", "idx": 4, "kind": "tree"},
                {"do": "restore", "kind": "tree"},
                {"do": "save", "idx": 5, "kind": "vc", "fault": {"1": "kill"}},
            ],
        )
        self.keys_after_a = self.storage.list("ckpt/")
        # A single-file checkpoint, as a one-process run writes it.
        self.single_url = url + "-single"
        single = {name: objio.TrainVar(value) for name, value in harness.model(9).items()}
        objio.Checkpoint(self.single_url, keep_ckpts=None).save(objio.VarCollection(single), 9)
        # Job B, a new job: restore the last good checkpoint (the pytree), save the next (a VarCollection);
        # its cleanup removes what 5 left.
        self.b = harness.run_job(
            folder / "b",
            self.url,
            2,
            2,
            [
                {"do": "restore", "kind": "tree"},
                {"do": "save", "idx": 6, "kind": "vc"},
                {"do": "restore", "kind": "vc", "url": self.single_url},
            ],
        )
        self.keys_after_b = self.storage.list("ckpt/")

    def step(self, job: str, process: int, index: int) -> dict[str, Any]:
        results = getattr(self, job)[process]
        assert len(results) > index, f"process {process} of job {job} did not report step {index}\n{self.logs(job)}"
        return dict(results[index])

    def logs(self, job: str) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((self.folder / job).glob("*.log"))
        )


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    folder = tmp_path_factory.mktemp("multihost_checkpoint")
    return Jobs(folder, str(folder / "run"))


def _folders(keys: list[str]) -> list[str]:
    """The checkpoint files and parts folders among ``keys``: ``0000000003.npz``, ``0000000003.parts``."""
    return sorted({key.split("/")[1] for key in keys})


def test_every_process_saves_and_restores_a_var_collection(jobs: Jobs) -> None:
    for process in (0, 1):
        for index in (0, 1, 2):
            assert jobs.step("a", process, index)["outcome"] == "ok", jobs.step("a", process, index)
        restored = jobs.step("a", process, 3)
        assert (restored["outcome"], restored["restored"], restored["mismatches"]) == ("ok", 3, [])


def test_every_process_saves_and_restores_a_pytree(jobs: Jobs) -> None:
    for process in (0, 1):
        assert jobs.step("a", process, 4)["outcome"] == "ok"
        restored = jobs.step("a", process, 5)
        assert (restored["outcome"], restored["restored"], restored["mismatches"]) == ("ok", 4, [])


def test_retention_across_processes_deletes_the_parts_too(jobs: Jobs) -> None:
    # keep_ckpts=2 over saves 1-4: 1 and 2 deleted with their parts; 5 failed, its parts invisible.
    assert _folders(jobs.keys_after_a) == [
        "0000000003.npz",
        "0000000003.parts",
        "0000000004.npz",
        "0000000004.parts",
        "0000000005.parts",
    ]


def test_a_killed_process_leaves_nothing_visible_and_the_next_job_restores(jobs: Jobs) -> None:
    assert len(jobs.a[1]) == 6, "process 1 should have died in its 7th step"
    survivor = jobs.step("a", 0, 6)
    assert survivor["outcome"] == "SaveAbortedError"
    assert "0000000005.npz: process 1 did not answer within timeout_s=10 s" in survivor["message"]
    for process in (0, 1):
        restored = jobs.step("b", process, 0)
        assert (restored["outcome"], restored["restored"], restored["mismatches"]) == ("ok", 4, [])


def test_the_next_save_removes_what_the_failed_save_left(jobs: Jobs) -> None:
    for process in (0, 1):
        assert jobs.step("b", process, 1)["outcome"] == "ok"
    assert _folders(jobs.keys_after_b) == ["0000000004.npz", "0000000004.parts", "0000000006.npz", "0000000006.parts"]


def test_every_process_restores_a_single_file_checkpoint(jobs: Jobs) -> None:
    for process in (0, 1):
        restored = jobs.step("b", process, 2)
        assert (restored["outcome"], restored["restored"], restored["mismatches"]) == ("ok", 9, [])


def test_restore_in_a_plain_process(jobs: Jobs) -> None:
    import jax.numpy as jnp

    import objio

    harness = _harness()
    ckpt = objio.Checkpoint(jobs.url, keep_ckpts=2)
    assert ckpt.indices() == [4, 6]
    assert ckpt.metadata(4) == {"idx": 4}
    vc = objio.VarCollection(
        {name: objio.TrainVar(jnp.zeros(v.shape, v.dtype)) for name, v in harness.model(0).items()}
    )
    assert ckpt.restore(vc) == (6, f"{jobs.url}/{_key(6)}")
    for name, want in harness.model(6).items():
        assert vc[name].value.dtype == want.dtype and np.asarray(vc[name].value).tobytes() == want.tobytes(), name
    idx, tree = ckpt.restore_tree(idx=4)
    assert idx == 4 and sorted(tree) == ["params", "step"]
    assert isinstance(tree["params"]["nx"], np.ndarray)
    assert tree["params"]["nx"].tobytes() == harness.model(4)["nx"].tobytes()
    same = objio.load_tree(f"{jobs.url}/{_key(4)}", like={"params": {"x": np.zeros((8, 6), np.float32)}})
    assert same["params"]["x"].tobytes() == harness.model(4)["x"].tobytes()


# ---------------------------------------------------------------- in one plain process


def _sharded_checkpoint(logdir: str, idx: int) -> None:
    """A multi-process checkpoint as a job writes it (save_sharded runs in a plain process too)."""
    import objio
    from objio.multihost import save_sharded

    harness = _harness()
    save_sharded(objio.open_storage(logdir), _key(idx), harness.model(idx), metadata={"idx": idx})


def test_a_plain_process_is_not_a_multi_process_job() -> None:
    from objio.multihost import in_multi_process_job

    assert in_multi_process_job() is False


def test_convert_consolidates_a_multi_process_checkpoint(tmp_path: Path) -> None:
    import objio

    logdir = str(tmp_path / "run")
    _sharded_checkpoint(logdir, 7)
    objio.io.convert(f"{logdir}/{_key(7)}", str(tmp_path / "model.npz"))
    objio.io.convert(f"{logdir}/{_key(7)}", str(tmp_path / "model.safetensors"))
    want = _harness().model(7)
    with np.load(tmp_path / "model.npz") as npz:
        assert npz["names"].tolist() == list(want)
        assert npz["0"].tobytes() == want["x"].tobytes()
    assert objio.read_metadata(str(tmp_path / "model.npz")) == {"idx": 7}
    loaded = objio.load_tree(str(tmp_path / "model.safetensors"))
    assert sorted(loaded) == sorted(want)
    assert all(loaded[name].tobytes() == want[name].tobytes() for name in want)
    with open(f"{logdir}/{_key(7)}", "rb") as stream, pytest.raises(TypeError, match="pass its path or URL"):
        objio.io.convert(stream, str(tmp_path / "other.npz"))


def test_retention_in_a_plain_process_deletes_a_multi_process_checkpoint_with_its_parts(tmp_path: Path) -> None:
    import jax.numpy as jnp

    import objio

    logdir = str(tmp_path / "run")
    _sharded_checkpoint(logdir, 1)
    storage = objio.open_storage(logdir)
    assert storage.list("ckpt/0000000001.parts/")
    ckpt = objio.Checkpoint(logdir, keep_ckpts=1)
    ckpt.save({"w": jnp.ones(2)}, 2)
    assert ckpt.indices() == [2]
    assert storage.list("ckpt/") == [_key(2)]


def test_a_shape_mismatch_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    import jax.numpy as jnp

    import objio
    from objio.errors import MissingVariablesError, ShapeMismatchError

    logdir = str(tmp_path / "run")
    _sharded_checkpoint(logdir, 1)
    ckpt = objio.Checkpoint(logdir, keep_ckpts=None)
    vc = objio.VarCollection({"x": objio.TrainVar(jnp.zeros((6, 8), jnp.float32))})
    with pytest.raises(ShapeMismatchError, match=r"variable x from .*0000000001.npz: the file holds shape \(8, 6\)"):
        ckpt.restore(vc)
    assert vc["x"].value.shape == (6, 8)
    with pytest.raises(MissingVariablesError, match=r"\['params/w'\]"):
        ckpt.restore_tree(like={"params": {"w": jnp.zeros(3)}})


def test_objio_cp_consolidates_and_gc_removes_failed_parts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import objio
    from objio.cli import main

    logdir = str(tmp_path / "run")
    _sharded_checkpoint(logdir, 1)
    _sharded_checkpoint(logdir, 2)
    storage = objio.open_storage(logdir)
    with storage.open_writer("ckpt/0000000003.parts/dead/00001.npz") as stream:  # what a killed save left
        stream.write(b"part")
    os.utime(tmp_path / "run/ckpt/0000000003.parts/dead/00001.npz", (0, 0))  # long ago
    with storage.open_writer("ckpt/0000000004.parts/live/00000.npz") as stream:  # a save still running
        stream.write(b"part")

    assert main(["cp", f"{logdir}/{_key(1)}", str(tmp_path / "model.npz")]) == 0
    assert "(consolidated a multi-process checkpoint)" in capsys.readouterr().out
    with np.load(tmp_path / "model.npz") as npz:
        assert npz["names"].tolist() == list(_harness().model(1))
        assert npz["0"].tobytes() == _harness().model(1)["x"].tobytes()

    assert main(["gc", logdir, "--keep", "1", "--dry-run"]) == 0
    assert "parts of failed multi-process saves: would remove 1 older than 3600 s" in capsys.readouterr().out
    assert main(["gc", logdir, "--keep", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["uncommitted_parts"] == ["ckpt/0000000003.parts/dead/00001.npz"]
    assert report["checkpoints_deleted"] == [1]
    assert [key.split("/")[1] for key in storage.list("ckpt/")] == [
        "0000000002.npz",
        "0000000002.parts",
        "0000000004.parts",
    ]
