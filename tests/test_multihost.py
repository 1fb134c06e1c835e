"""Multi-process checkpoints on jax.distributed: real jobs of N local processes on 127.0.0.1.

Each job runs this file as a script (``python test_multihost.py plan.json``): the processes start
jax.distributed with the CPU collectives (gloo) and 2 or 1 devices each, run the plan's steps (save,
restore) and write what happened to ``<out>/<process>.json`` after every step, so a job whose
process is killed still reports. Faults are injected by a storage wrapper (a part write that raises,
or SIGKILLs its own process, half way through), which also counts the bytes each process writes and
reads. The pytest process then checks the storage itself, and restores in a plain process (no
jax.distributed). The S3 variants (plugins/objio-s3/tests/test_s3_multihost.py) reuse the harness.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

SCRIPT = Path(__file__).resolve()
JOB_TIMEOUT_S = 120
# The model, saved on a mesh of 4 devices named 'x'; every kind of sharding plus a scalar.
SAVE_TOPOLOGY = {
    "mesh": [4],
    "axes": ["x"],
    "specs": {"x": ["x"], "xn": ["x", None], "nx": [None, "x"], "rep": [], "step": []},
}
# Job B saves on a 2x2 mesh where most arrays are replicated along one axis: replica 0 only, still.
REPLICATED_TOPOLOGY = {
    "mesh": [2, 2],
    "axes": ["a", "b"],
    "specs": {"x": ["a"], "xn": [None, "b"], "nx": ["b", "a"], "rep": [], "step": []},
}
# Restore (c): one process with 4 devices on a 2x2 mesh, every array laid out differently.
OTHER_TOPOLOGY = {
    "mesh": [2, 2],
    "axes": ["a", "b"],
    "specs": {"x": [None, "a"], "xn": ["b", "a"], "nx": [["a", "b"], None], "rep": ["a"], "step": []},
}


def model(idx: int) -> dict[str, np.ndarray]:
    """The arrays of checkpoint ``idx``, different for every index."""
    import ml_dtypes

    return {
        "x": (np.arange(48, dtype=np.float32).reshape(8, 6) + idx * 1000),
        "xn": (np.arange(32, dtype=np.int32).reshape(8, 4) * 3 - idx),
        "nx": (np.arange(32, dtype=np.float32).reshape(4, 8) / 8 + idx).astype(ml_dtypes.bfloat16),
        "rep": np.linspace(-1, 1, 6, dtype=np.float32) * idx,
        "step": np.array(idx * 10, dtype=np.int32),
    }


def unique_bytes(idx: int = 1) -> int:
    return sum(a.nbytes for a in model(idx).values())


# ---------------------------------------------------------------- the worker (runs in each process)


class _CountingStorage:
    """A storage that counts the bytes this process writes and reads, and injects a fault into its part."""

    def __init__(self, inner: Any, process: int) -> None:
        self._inner = inner
        self.url = inner.url
        self.capabilities = inner.capabilities
        self.process = process
        self.written = 0
        self.read = 0
        self.fault: str | None = None  # "raise" or "kill", for the next part write

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def open_reader(self, key: str) -> Any:
        return _CountingReader(self._inner.open_reader(key), self)

    def open_writer(self, key: str, *, if_absent: bool = False) -> Any:
        import contextlib

        @contextlib.contextmanager
        def writer() -> Any:
            with self._inner.open_writer(key, if_absent=if_absent) as stream:
                yield _CountingWriter(stream, self, ".parts/" in key)

        return writer()


class _CountingReader:
    def __init__(self, stream: Any, owner: _CountingStorage) -> None:
        self._stream = stream
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def __enter__(self) -> _CountingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._owner.read += len(data)
        return bytes(data)

    def readinto(self, buffer: Any) -> int:
        n = self._stream.readinto(buffer)
        self._owner.read += n or 0
        return n


class _CountingWriter:
    def __init__(self, stream: Any, owner: _CountingStorage, is_part: bool) -> None:
        self._stream = stream
        self._owner = owner
        self._is_part = is_part

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def write(self, data: Any) -> int:
        n = self._stream.write(data)
        if self._is_part:
            self._owner.written += len(memoryview(data).cast("B"))
            if self._owner.fault and self._owner.written > 512:  # half way through the part
                if self._owner.fault == "kill":
                    self._stream.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                raise OSError(f"injected failure in process {self._owner.process}")
        return n


def _sharding(topology: dict[str, Any], name: str) -> Any:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh(tuple(topology["mesh"]), tuple(topology["axes"]))
    spec = [tuple(a) if isinstance(a, list) else a for a in topology["specs"][name]]
    return NamedSharding(mesh, PartitionSpec(*spec))


def _run_step(step: dict[str, Any], storage: _CountingStorage, process: int) -> dict[str, Any]:
    import jax

    from objio import multihost

    key = f"ckpt/{step['idx']:010d}.npz"
    expected = model(step["idx"])
    storage.written = storage.read = 0
    result: dict[str, Any] = {"step": step["do"], "idx": step["idx"]}
    try:
        if step["do"] == "save":
            arrays = {
                name: jax.make_array_from_callback(
                    value.shape,
                    _sharding(step.get("topology", SAVE_TOPOLOGY), name),
                    lambda index, value=value: value[index],
                )
                for name, value in expected.items()
            }
            storage.fault = step.get("fault", {}).get(str(process))
            multihost.save_sharded(storage, key, arrays, timeout_s=step.get("timeout_s", 60))
        else:
            targets = {name: _sharding(step["topology"], name) for name in expected}
            loaded = multihost.load_sharded(storage, key, targets)
            mismatches = []
            for name, array in loaded.items():
                if array.sharding != targets[name] or array.dtype != expected[name].dtype:
                    mismatches.append(f"{name}: {array.sharding} {array.dtype}")
                for shard in array.addressable_shards:
                    want = expected[name][shard.index]
                    if np.asarray(shard.data).tobytes() != want.tobytes():
                        mismatches.append(f"{name}{shard.index}")
            result["mismatches"] = mismatches
        result["outcome"] = "ok"
    except Exception as e:  # noqa: BLE001 - the test asserts on the type and message
        result["outcome"] = type(e).__name__
        result["message"] = str(e)
    result["written"] = storage.written
    result["read"] = storage.read
    return result


def _worker(plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text())
    process = plan["process"]
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if plan["processes"] > 1:
        jax.distributed.initialize(
            f"127.0.0.1:{plan['port']}", num_processes=plan["processes"], process_id=process, initialization_timeout=60
        )
    import objio  # after jax.distributed.initialize, which must come before any JAX computation

    storage = _CountingStorage(objio.open_storage(plan["url"]), process)
    results: list[dict[str, Any]] = []
    out = Path(plan["out"]) / f"{process}.json"
    for step in plan["steps"]:
        results.append(_run_step(step, storage, process))
        out.with_suffix(".tmp").write_text(json.dumps(results))
        os.replace(out.with_suffix(".tmp"), out)
    if plan["processes"] > 1 and not any("kill" in step.get("fault", {}).values() for step in plan["steps"]):
        jax.distributed.shutdown()
    sys.stdout.flush()
    os._exit(0)  # a job whose peer was killed cannot shut jax.distributed down cleanly


if __name__ == "__main__":
    _worker(sys.argv[1])


# ---------------------------------------------------------------- the harness (runs in pytest)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_job(
    folder: Path, url: str, processes: int, devices: int, steps: list[dict[str, Any]]
) -> list[list[dict[str, Any]]]:
    """Run ``steps`` in a job of ``processes`` x ``devices``; return each process's step results."""
    folder.mkdir(parents=True)
    port = _free_port()
    env = dict(os.environ)
    env.update(
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
        OMP_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    children = []
    for process in range(processes):
        plan = {
            "process": process,
            "processes": processes,
            "port": port,
            "url": url,
            "out": str(folder),
            "steps": steps,
        }
        plan_path = folder / f"plan{process}.json"
        plan_path.write_text(json.dumps(plan))
        log = open(folder / f"{process}.log", "wb")  # noqa: SIM115 - closed below
        children.append(
            (
                subprocess.Popen(
                    [sys.executable, str(SCRIPT), str(plan_path)], stdout=log, stderr=subprocess.STDOUT, env=env
                ),
                log,
            )
        )
    results = []
    try:
        for process, (child, _) in enumerate(children):
            child.wait(timeout=JOB_TIMEOUT_S)
            path = folder / f"{process}.json"
            results.append(json.loads(path.read_text()) if path.exists() else [])
    finally:
        for child, log in children:
            if child.poll() is None:
                child.kill()
                child.wait()
            log.close()
    return results


def logs(folder: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*.log")))


# ---------------------------------------------------------------- the tests

import pytest  # noqa: E402 - the worker above runs without pytest's import machinery

from objio.errors import CorruptFileError, MissingVariablesError, ObjectExistsError  # noqa: E402


def _key(idx: int) -> str:
    return f"ckpt/{idx:010d}.npz"


class Jobs:
    """What the shared jobs did, and the storage they did it in."""

    def __init__(self, folder: Path, url: str) -> None:
        import objio

        self.folder = folder
        self.url = url
        self.storage = objio.open_storage(url)
        self.total_part_bytes = 0
        # Job A, 2 processes x 2 devices: save, restore, a conflict, a process that raises, one killed.
        self.a = run_job(
            folder / "a",
            url,
            2,
            2,
            [
                {"do": "save", "idx": 1},
                {"do": "restore", "idx": 1, "topology": SAVE_TOPOLOGY},
                {"do": "save", "idx": 1},
                {"do": "save", "idx": 2, "fault": {"1": "raise"}},
                # The timeout bounds process 0's wait for the killed process's report.
                {"do": "save", "idx": 3, "fault": {"1": "kill"}, "timeout_s": 10},
            ],
        )
        self.indices_after_a = objio.Checkpoint(url, keep_ckpts=None).indices()
        self.keys_after_a = self.storage.list("ckpt/")
        # Job B, a new job of 4 processes x 1 device: restore the last good checkpoint, save 2 again.
        self.b = run_job(
            folder / "b",
            url,
            4,
            1,
            [
                {"do": "restore", "idx": 1, "topology": SAVE_TOPOLOGY},
                {"do": "save", "idx": 2, "topology": REPLICATED_TOPOLOGY},
                {"do": "restore", "idx": 2, "topology": SAVE_TOPOLOGY},
            ],
        )
        # An ordinary single-file checkpoint, as a one-process job (or Objax) writes it.
        plain = objio.VarCollection({name: objio.TrainVar(value) for name, value in model(5).items()})
        objio.io.save_var_collection(f"{url}/{_key(5)}", plain)
        # Job C, 1 process x 4 devices, another mesh and other PartitionSpecs.
        self.c = run_job(
            folder / "c",
            url,
            1,
            4,
            [
                {"do": "restore", "idx": 1, "topology": OTHER_TOPOLOGY},
                {"do": "restore", "idx": 2, "topology": OTHER_TOPOLOGY},
                {"do": "restore", "idx": 5, "topology": OTHER_TOPOLOGY},
            ],
        )

    def step(self, job: list[list[dict[str, Any]]], process: int, index: int, job_name: str) -> dict[str, Any]:
        results = job[process]
        assert len(results) > index, (
            f"process {process} of job {job_name} did not report step {index}\n{logs(self.folder / job_name)}"
        )
        return results[index]


def start_jobs(folder: Path, url: str) -> Jobs:
    return Jobs(folder, url)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> Jobs:
    folder = tmp_path_factory.mktemp("multihost")
    return start_jobs(folder, str(folder / "run"))


def check_save_writes_each_unique_shard_once(jobs: Jobs) -> None:
    from objio.multihost import load_manifest

    for process in (0, 1):
        assert jobs.step(jobs.a, process, 0, "a")["outcome"] == "ok"
    manifest = load_manifest(jobs.storage, _key(1))
    assert manifest.process_count == 2
    assert [p.rsplit("/", 1)[1] for p in manifest.parts] == ["00000.npz", "00001.npz"]
    written = [jobs.step(jobs.a, p, 0, "a")["written"] for p in (0, 1)]
    data_bytes = []
    for process, part in enumerate(manifest.parts):
        key = f"ckpt/{part}"
        assert written[process] == jobs.storage.size(key)  # each process wrote exactly its own part
        with jobs.storage.open_reader(key) as stream, np.load(stream) as npz:
            names = [str(n) for n in npz["names"]]
            data_bytes.append(sum(npz[str(i)].nbytes for i in range(len(names))))
        # Process 0 holds devices 0-1 (rows 0:4 of x), process 1 devices 2-3; replicated values once, in process 0.
        if process == 0:
            assert names == [
                "x[0:2,0:6]",
                "x[2:4,0:6]",
                "xn[0:2,0:4]",
                "xn[2:4,0:4]",
                "nx[0:4,0:2]",
                "nx[0:4,2:4]",
                "rep[0:6]",
                "step[]",
            ]
        else:
            assert names == ["x[4:6,0:6]", "x[6:8,0:6]", "xn[4:6,0:4]", "xn[6:8,0:4]", "nx[0:4,4:6]", "nx[0:4,6:8]"]
    assert sum(data_bytes) == unique_bytes(1) == 192 + 128 + 64 + 24 + 4
    print(f"bytes written per process: {written}; data {data_bytes}; model {unique_bytes(1)}")


def test_save_writes_each_unique_shard_once(jobs: Jobs) -> None:
    check_save_writes_each_unique_shard_once(jobs)


def _assert_restored(step: dict[str, Any]) -> None:
    assert step["outcome"] == "ok", step
    assert step["mismatches"] == []


def check_restore_on_the_same_topology(jobs: Jobs) -> None:
    total = sum(jobs.storage.size(k) for k in jobs.storage.list("ckpt/0000000001"))
    for process in (0, 1):
        step = jobs.step(jobs.a, process, 1, "a")
        _assert_restored(step)
        assert 0 < step["read"] < total  # only its own shards' ranges, the directories and the manifest


def test_restore_on_the_same_topology(jobs: Jobs) -> None:
    check_restore_on_the_same_topology(jobs)


def test_restore_on_4_processes_of_1_device_in_a_new_job(jobs: Jobs) -> None:
    for process in range(4):
        _assert_restored(jobs.step(jobs.b, process, 0, "b"))
        _assert_restored(jobs.step(jobs.b, process, 2, "b"))  # saved by this topology, read back by it


def test_restore_on_1_process_with_another_sharding(jobs: Jobs) -> None:
    _assert_restored(jobs.step(jobs.c, 0, 0, "c"))
    _assert_restored(jobs.step(jobs.c, 0, 1, "c"))


def test_restore_of_a_single_file_checkpoint_onto_4_devices(jobs: Jobs) -> None:
    _assert_restored(jobs.step(jobs.c, 0, 2, "c"))


def check_restore_in_a_plain_process(jobs: Jobs) -> None:
    import jax

    from objio.multihost import load_sharded

    for idx in (1, 2):
        full = load_sharded(jobs.storage, _key(idx), dict.fromkeys(model(idx)))
        for name, want in model(idx).items():
            assert isinstance(full[name], np.ndarray) and full[name].dtype == want.dtype, name
            assert full[name].tobytes() == want.tobytes(), name
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    arrays = load_sharded(jobs.storage, _key(1), {"nx": device, "step": device})
    assert isinstance(arrays["nx"], jax.Array) and np.asarray(arrays["nx"]).tobytes() == model(1)["nx"].tobytes()
    assert int(arrays["step"]) == 10


def test_restore_in_a_plain_process(jobs: Jobs) -> None:
    check_restore_in_a_plain_process(jobs)


def check_create_only_conflict(jobs: Jobs) -> None:
    for process in (0, 1):
        step = jobs.step(jobs.a, process, 2, "a")
        assert step["outcome"] == "ObjectExistsError", step
        assert "0000000001.npz already exists" in step["message"]
        assert step["written"] == 0  # checked before any part was written


def test_create_only_conflict_fails_in_every_process(jobs: Jobs) -> None:
    check_create_only_conflict(jobs)


def check_a_process_that_raises(jobs: Jobs) -> None:
    own = jobs.step(jobs.a, 1, 3, "a")
    assert (own["outcome"], own["message"]) == ("OSError", "injected failure in process 1")
    other = jobs.step(jobs.a, 0, 3, "a")
    assert other["outcome"] == "SaveAbortedError"
    assert "0000000002.npz: process 1 failed: OSError: injected failure in process 1" in other["message"]
    assert _key(2) not in jobs.keys_after_a


def test_a_process_that_raises_fails_the_save_everywhere(jobs: Jobs) -> None:
    check_a_process_that_raises(jobs)


def check_a_killed_process(jobs: Jobs) -> None:
    assert len(jobs.a[1]) == 4, "process 1 should have died in its 5th step"
    survivor = jobs.step(jobs.a, 0, 4, "a")
    assert survivor["outcome"] == "SaveAbortedError"
    assert "process 1 did not answer within timeout_s=10 s" in survivor["message"]
    assert _key(3) not in jobs.keys_after_a
    assert jobs.indices_after_a == [1]  # neither failed save is listed; the parts they left are not either
    assert any(k.startswith("ckpt/0000000003.parts/") for k in jobs.keys_after_a)
    _assert_restored(jobs.step(jobs.b, 0, 0, "b"))  # the previous checkpoint restores in a new job


def test_a_killed_process_leaves_nothing_visible(jobs: Jobs) -> None:
    check_a_killed_process(jobs)


def check_retry_removes_leftover_parts(jobs: Jobs) -> None:
    from objio.multihost import load_manifest

    for process in range(4):
        assert jobs.step(jobs.b, process, 1, "b")["outcome"] == "ok"
    manifest = load_manifest(jobs.storage, _key(2))
    assert manifest.process_count == 4
    assert jobs.storage.list("ckpt/0000000002.parts/") == [f"ckpt/{p}" for p in manifest.parts]
    written = [jobs.step(jobs.b, p, 1, "b")["written"] for p in range(4)]
    assert sum(written) == sum(jobs.storage.size(f"ckpt/{p}") for p in manifest.parts)
    data_bytes = 0
    for part in manifest.parts:
        with jobs.storage.open_reader(f"ckpt/{part}") as stream, np.load(stream) as npz:
            data_bytes += sum(npz[str(i)].nbytes for i in range(len(npz["names"])))
    assert data_bytes == unique_bytes(2)  # x is on 2 of 4 devices twice over, yet written once


def test_a_retry_removes_the_parts_a_failed_save_left(jobs: Jobs) -> None:
    check_retry_removes_leftover_parts(jobs)


def test_consolidate_gives_one_objax_compatible_npz(jobs: Jobs, tmp_path: Path) -> None:
    import objio
    from objio.codec import NpzReader
    from objio.multihost import consolidate

    out = objio.open_storage(str(tmp_path))
    consolidate(jobs.storage, _key(2), out, "model.npz")
    with np.load(tmp_path / "model.npz") as npz:  # what Objax does
        assert list(npz["names"]) == list(model(2))
        assert npz["0"].tobytes() == model(2)["x"].tobytes()
    with open(tmp_path / "model.npz", "rb") as f, NpzReader(f) as reader:
        for i, (name, want) in enumerate(model(2).items()):
            got = reader.read(i)
            assert (got.dtype, got.tobytes()) == (want.dtype, want.tobytes()), name
    with pytest.raises(ObjectExistsError):
        consolidate(jobs.storage, _key(2), out, "model.npz")


def test_the_commit_object_is_an_npz_with_no_arrays(jobs: Jobs) -> None:
    import objio
    from objio.multihost import is_multihost_checkpoint

    with jobs.storage.open_reader(_key(1)) as stream, np.load(stream) as npz:
        assert npz["names"].shape == (0,)  # Objax reads no names: "Missing value for variables"
    assert is_multihost_checkpoint(jobs.storage, _key(1))
    vc = objio.VarCollection({"x": objio.TrainVar(np.zeros((8, 6), np.float32))})
    with pytest.raises(MissingVariablesError, match="x"):
        objio.io.load_var_collection(f"{jobs.url}/{_key(1)}", vc)


_OBJAX_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
import jax.numpy as jnp, numpy as np, objax
logdir, consolidated = sys.argv[1], sys.argv[2]
def model():
    return objax.VarCollection({
        "x": objax.TrainVar(jnp.zeros((8, 6), jnp.float32)),
        "xn": objax.StateVar(jnp.zeros((8, 4), jnp.int32)),
        "rep": objax.TrainVar(jnp.zeros(6, jnp.float32)),
        "step": objax.StateVar(jnp.zeros((), jnp.int32)),
    })
try:
    objax.io.Checkpoint(logdir, keep_ckpts=5).restore(model(), idx=2)
    restore = "restored"
except Exception as e:
    restore = f"{type(e).__name__}: {e}"
vc = model()
objax.io.load_var_collection(consolidated, vc)
print(json.dumps({"restore": restore, "values": {k: np.asarray(v.value).tolist() for k, v in vc.items()}}))
"""


def test_objax_refuses_the_commit_object_and_loads_the_consolidated_file(jobs: Jobs, tmp_path: Path) -> None:
    import objio
    from objio.multihost import consolidate

    objax_python = os.environ.get("OBJIO_OBJAX_PYTHON")
    if not objax_python:
        pytest.skip("set OBJIO_OBJAX_PYTHON to the Python of an Objax 1.8 environment")
    logdir = tmp_path / "objax-run"
    consolidate(jobs.storage, _key(1), objio.open_storage(str(logdir)), _key(1))  # Objax's layout, consolidated
    multihost_logdir = Path(jobs.url)  # holds commit objects 1 and 2 and their parts
    done = subprocess.run(
        [objax_python, "-c", _OBJAX_SCRIPT, str(multihost_logdir), str(logdir / _key(1))],
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Objax opens commit object 2, which holds no names: it says so, it loads nothing.
    assert result["restore"].startswith(
        "ValueError: Missing value for variables currently in the model: ['x', 'xn', 'rep', 'step']"
    )
    want = model(1)
    for name, values in result["values"].items():
        assert np.array_equal(np.asarray(values, dtype=want[name].dtype), want[name]), name


# ---------------------------------------------------------------- in one plain process, no jobs


@pytest.fixture
def storage() -> Any:
    import uuid

    import objio

    return objio.open_storage(f"memory://multihost-{uuid.uuid4().hex}")


def test_a_single_process_save_round_trips_host_values(storage: Any) -> None:
    import objio
    from objio.multihost import is_multihost_checkpoint, load_sharded, save_sharded

    values = model(5)
    save_sharded(storage, _key(5), values)
    assert objio.Checkpoint(storage.url, keep_ckpts=None).indices() == [5]
    assert is_multihost_checkpoint(storage, _key(5))
    loaded = load_sharded(storage, _key(5), dict.fromkeys(values))
    assert {k: v.tobytes() for k, v in loaded.items()} == {k: v.tobytes() for k, v in values.items()}
    with pytest.raises(ObjectExistsError, match="already exists"):
        save_sharded(storage, _key(5), values)


def test_a_box_inside_a_wide_shard_reads_only_its_rows(storage: Any) -> None:
    from objio.multihost import load_manifest, save_sharded
    from objio.multihost._load import PartReader

    wide = np.arange(4 * 300_000, dtype=np.float32).reshape(4, 300_000)  # rows of 1.2 MB: one range per row
    save_sharded(storage, "w.npz", {"w": wide})
    manifest = load_manifest(storage, "w.npz")
    counting = _CountingStorage(storage, 0)
    with PartReader(counting, "", manifest, "w.npz") as parts:
        got = parts.read_box(manifest.arrays[0], ((1, 3), (10, 20)))
    assert got.tobytes() == wide[1:3, 10:20].tobytes()
    assert counting.read < 4096  # the zip directory, two npy headers and two 40-byte runs


def test_any_box_of_a_saved_array_reads_back_exactly(storage: Any) -> None:
    from objio.multihost import load_manifest, save_sharded
    from objio.multihost._load import PartReader

    rng = np.random.default_rng(0)
    small = rng.standard_normal((6, 5, 7)).astype(np.float32)
    deep = np.arange(3 * 4 * 100_000, dtype=np.int32).reshape(3, 4, 100_000)  # runs in the last dimension
    save_sharded(storage, "b.npz", {"small": small, "deep": deep})
    manifest = load_manifest(storage, "b.npz")
    boxes = [((1, 3), (1, 3), (5, 9))]  # of deep: 6 runs of 16 bytes, not 4.8 MB of rows
    for _ in range(40):
        starts = [int(rng.integers(0, n)) for n in small.shape]
        boxes.append(tuple((a, int(rng.integers(a + 1, n + 1))) for a, n in zip(starts, small.shape, strict=True)))
    counting = _CountingStorage(storage, 0)
    with PartReader(counting, "", manifest, "b.npz") as parts:
        for box in boxes:
            entry, array = (manifest.arrays[1], deep) if box == boxes[0] else (manifest.arrays[0], small)
            got = parts.read_box(entry, box)
            assert got.tobytes() == array[tuple(slice(a, b) for a, b in box)].tobytes(), box
            if box == boxes[0]:
                assert counting.read < 4096


def test_a_damaged_shard_fails_its_crc_check(storage: Any) -> None:
    from objio.multihost import load_manifest, load_sharded, save_sharded

    save_sharded(storage, "d.npz", {"a": np.arange(100, dtype=np.int64)})
    part = load_manifest(storage, "d.npz").parts[0]
    with storage.open_reader(part) as f:
        data = bytearray(f.read())
    data[data.index(np.int64(42).tobytes())] ^= 1  # one bit of element 42
    with storage.open_writer(part) as f:
        f.write(bytes(data))
    with pytest.raises(CorruptFileError, match=r"0.npy fails its CRC-32 check"):
        load_sharded(storage, "d.npz", {"a": None})


def test_restore_of_unknown_names_says_which(storage: Any) -> None:
    from objio.multihost import load_sharded, save_sharded

    save_sharded(storage, "m.npz", {"a": np.ones(3)})
    with pytest.raises(MissingVariablesError, match=r"no arrays named \['b'\]; it has \['a'\]") as e:
        load_sharded(storage, "m.npz", {"b": None})
    assert (e.value.missing, e.value.unused) == (["b"], ["a"])


def test_a_single_process_checkpoint_restores_onto_a_sharding_too(storage: Any) -> None:
    import jax

    import objio
    from objio.multihost import is_multihost_checkpoint, load_manifest, load_sharded

    values = model(3)
    vc = objio.VarCollection({name: objio.TrainVar(value) for name, value in values.items()})
    objio.io.save_var_collection(f"{storage.url}/plain.npz", vc)
    assert not is_multihost_checkpoint(storage, "plain.npz")
    manifest = load_manifest(storage, "plain.npz")
    assert manifest.parts == ("plain.npz",)
    assert [(a.name, a.shape, a.dtype) for a in manifest.arrays] == [(k, v.shape, v.dtype) for k, v in values.items()]
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    loaded = load_sharded(storage, "plain.npz", {"nx": device, "x": None})
    assert np.asarray(loaded["nx"]).tobytes() == values["nx"].tobytes()
    assert loaded["x"].tobytes() == values["x"].tobytes()


def test_a_compressed_npz_cannot_be_read_by_ranges(storage: Any) -> None:
    import io

    from objio.multihost import load_manifest

    buffer = io.BytesIO()
    np.savez_compressed(buffer, names=np.array(["a"]), **{"0": np.ones(3)})
    with storage.open_writer("z.npz") as stream:
        stream.write(buffer.getvalue())
    with pytest.raises(CorruptFileError, match="0.npy is compressed, so it cannot be read by ranges"):
        load_manifest(storage, "z.npz")


def test_a_manifest_whose_shards_do_not_tile_the_array_is_corrupt(storage: Any) -> None:
    from objio.multihost import ArrayEntry, Manifest, ShardEntry, load_sharded
    from objio.multihost._layout import commit_bytes

    bad = Manifest(
        parts=("p.parts/0/00000.npz",),
        arrays=(ArrayEntry("a", (4,), np.dtype(np.float32), (ShardEntry(((0, 2),), 0, 0),)),),
        process_count=1,
    )
    with storage.open_writer("p.npz") as stream:
        stream.write(commit_bytes(bad))
    with pytest.raises(CorruptFileError, match="shards of 'a' hold 2 elements, its shape .4,. needs 4"):
        load_sharded(storage, "p.npz", {"a": None})


def test_uncommitted_parts_are_those_no_commit_lists(storage: Any) -> None:
    from objio.multihost import save_sharded, uncommitted_parts

    save_sharded(storage, "ckpt/0000000001.npz", {"a": np.ones(3)})
    for leftover in ("ckpt/0000000001.parts/dead/00001.npz", "ckpt/0000000002.parts/dead/00000.npz"):
        with storage.open_writer(leftover) as stream:
            stream.write(b"partial")
    assert uncommitted_parts(storage, "ckpt/") == [
        "ckpt/0000000001.parts/dead/00001.npz",
        "ckpt/0000000002.parts/dead/00000.npz",
    ]


def test_delete_removes_the_commit_then_the_parts(storage: Any) -> None:
    from objio.multihost import delete_sharded, delete_uncommitted, save_sharded

    save_sharded(storage, "ckpt/0000000001.npz", {"a": np.ones(3)})
    with storage.open_writer("ckpt/0000000001.parts/dead/00001.npz") as stream:  # a failed save's leftover
        stream.write(b"partial")
    assert delete_uncommitted(storage, "ckpt/0000000001.npz") == ["ckpt/0000000001.parts/dead/00001.npz"]
    assert len(storage.list("ckpt/")) == 2
    delete_sharded(storage, "ckpt/0000000001.npz")
    assert storage.list("ckpt/") == []
