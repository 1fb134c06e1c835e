"""Files objio writes load in real Objax 1.8, and files Objax writes load in objio: same names, same values.

Objax 1.8 cannot share objio's environment, so it runs in a virtual environment of its own: the
``objax_python`` fixture takes ``$OBJIO_OBJAX_PYTHON`` if set, or builds ``<repo>/.objax-venv`` the first
time (about 30 s, needs the package index) and reuses it afterwards.

Both sides build their modules from the same source (``SHARED`` below, run with ``lib`` bound to
``objio`` here and to ``objax`` in the child), so any difference in names is a difference between the
libraries, not between two hand-written copies of a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax.numpy as jnp
import pytest

import objio

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".objax-venv"
# objax 1.8 imports six without declaring it; jax 0.9.2 is the newest it runs on.
OBJAX_REQUIREMENTS = ["objax==1.8.0", "jax==0.9.2", "jaxlib==0.9.2", "numpy==2.4.*", "six"]

SHARED = '''
import jax.numpy as jnp
import numpy as np


class Model(lib.Module):
    """A network plus every kind of variable a file must carry."""

    def __init__(self):
        self.net = lib.nn.Sequential([lib.nn.Linear(768, 1), lib.functional.sigmoid])
        self.tied = self.net[0].w  # a shared weight: a second name, stored once
        self.ref = lib.TrainRef(self.net[0].b)  # what optimizers hold: stored as its target
        self.steps = lib.StateVar(jnp.array(0, jnp.int32))  # an int counter
        self.rng = lib.RandomState(0)  # a uint32[2] key


def build(kind):
    if kind == "sequential":
        return lib.nn.Sequential([lib.nn.Linear(768, 1), lib.functional.sigmoid])
    return Model()


def fill(module, seed):
    """Give every variable values that depend on ``seed`` and that no initialiser produces."""
    seen = set()
    for i, var in enumerate(module.vars().values()):
        if isinstance(var, lib.TrainRef) or id(var) in seen:
            continue
        seen.add(id(var))
        if isinstance(var, lib.RandomState):
            var.seed(seed)
            var.split(3)  # a key that no seed gives directly
        else:
            shape, dtype = var.value.shape, var.value.dtype
            values = np.arange(np.prod(shape, dtype=int)).reshape(shape) % 97 + seed + i / 8
            var.assign(jnp.asarray(values.astype(dtype)))


def dump(vc):
    """Every name of ``vc`` with its value's dtype, shape and values, in order, ready for JSON."""
    out = {}
    for name, var in vc.items():
        value = np.asarray(var.value)
        out[name] = [str(value.dtype), list(value.shape), value.ravel().tolist()]
    return out
'''

RESULT_MARK = "OBJAX-RESULT "
CHILD_PRELUDE = f"""
import json
import warnings

warnings.simplefilter("ignore")  # Objax 1.8's own warnings on a recent jax are not what we test
import objax
import objax as lib


def emit(result):
    print({RESULT_MARK!r} + json.dumps(result), flush=True)
"""


def _child_env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def run_objax(objax_python: str, cwd: Path, script: str) -> Any:
    """Run ``script`` with Objax 1.8 in ``cwd``, after ``SHARED`` (with ``lib = objax``); return what it emits."""
    result = subprocess.run(
        [objax_python, "-c", CHILD_PRELUDE + SHARED + script],
        cwd=cwd,
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"the Objax script failed:\n{result.stdout}\n{result.stderr}"
    emitted = [line[len(RESULT_MARK) :] for line in result.stdout.splitlines() if line.startswith(RESULT_MARK)]
    assert len(emitted) == 1, f"the Objax script emitted {len(emitted)} results:\n{result.stdout}"
    return json.loads(emitted[0])


def _shared(lib: Any) -> SimpleNamespace:
    namespace: dict[str, Any] = {"lib": lib}
    exec(SHARED, namespace)
    return SimpleNamespace(**namespace)


ours = _shared(objio)


# -- the Objax environment -------------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _objax_problem(python: str | os.PathLike[str]) -> str:
    """Why ``python`` cannot run Objax 1.8, or '' if it can."""
    check = "import objax, six; assert objax.__version__ == '1.8.0', objax.__version__"
    try:
        result = subprocess.run(
            [os.fspath(python), "-c", check], env=_child_env(), capture_output=True, text=True, timeout=300
        )
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return "" if result.returncode == 0 else (result.stderr.strip().splitlines() or ["failed"])[-1]


def _build_objax_venv() -> Path:
    """Create ``VENV`` afresh with Objax 1.8 installed; raise on any failure."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--clear", os.fspath(VENV)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    python = _venv_python(VENV)
    subprocess.run(
        [os.fspath(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *OBJAX_REQUIREMENTS],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    problem = _objax_problem(python)
    if problem:
        raise RuntimeError(f"Objax was installed but does not import: {problem}")
    return python


@pytest.fixture(scope="session")
def objax_python() -> str:
    """A Python interpreter that imports Objax 1.8."""
    configured = os.environ.get("OBJIO_OBJAX_PYTHON")
    if configured:
        problem = _objax_problem(configured)
        if problem:
            pytest.fail(f"OBJIO_OBJAX_PYTHON={configured} cannot import Objax 1.8: {problem}", pytrace=False)
        return configured
    python = _venv_python(VENV)
    if python.exists() and not _objax_problem(python):
        return os.fspath(python)
    try:
        return os.fspath(_build_objax_venv())
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        output = getattr(e, "stderr", "") or ""
        reason = f"could not build an Objax 1.8 venv at {VENV}: {e}\n{output[-3000:]}"
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# -- one file ----------------------------------------------------------------------------------------

KINDS = ["sequential", "model"]


@pytest.mark.parametrize("kind", KINDS)
def test_objax_loads_what_objio_saves(objax_python: str, tmp_path: Path, kind: str) -> None:
    module = ours.build(kind)
    ours.fill(module, seed=3)
    objio.io.save_var_collection(tmp_path / "objio.npz", module.vars())

    loaded = run_objax(
        objax_python,
        tmp_path,
        f"""
module = build({kind!r})
objax.io.load_var_collection("objio.npz", module.vars())
emit(dump(module.vars()))
""",
    )

    expected = ours.dump(module.vars())
    assert list(loaded) == list(expected)
    assert loaded == expected


@pytest.mark.parametrize("kind", KINDS)
def test_objio_loads_what_objax_saves(objax_python: str, tmp_path: Path, kind: str) -> None:
    saved = run_objax(
        objax_python,
        tmp_path,
        f"""
module = build({kind!r})
fill(module, seed=5)
objax.io.save_var_collection("objax.npz", module.vars())
emit(dump(module.vars()))
""",
    )

    module = ours.build(kind)
    objio.io.load_var_collection(tmp_path / "objax.npz", module.vars())

    loaded = ours.dump(module.vars())
    assert list(loaded) == list(saved)
    assert loaded == saved


def test_empty_collection_both_ways(objax_python: str, tmp_path: Path) -> None:
    objio.io.save_var_collection(tmp_path / "objio-empty.npz", objio.VarCollection())

    names = run_objax(
        objax_python,
        tmp_path,
        """
objax.io.load_var_collection("objio-empty.npz", objax.VarCollection())
objax.io.save_var_collection("objax-empty.npz", objax.VarCollection())
with np.load("objax-empty.npz") as data:
    emit([str(data["names"].dtype), list(data["names"].shape)])
""",
    )

    assert names == ["float64", [0]]  # np.array([]): Objax's empty list of names is float64
    objio.io.load_var_collection(tmp_path / "objax-empty.npz", objio.VarCollection())
    with pytest.raises(objio.MissingVariablesError) as caught:
        objio.io.load_var_collection(
            tmp_path / "objax-empty.npz", objio.VarCollection({"w": objio.TrainVar(jnp.zeros(1))})
        )
    assert (caught.value.missing, caught.value.unused) == (["w"], [])


# -- checkpoint folders ------------------------------------------------------------------------------


def test_objio_restores_objax_checkpoints(objax_python: str, tmp_path: Path) -> None:
    saved = run_objax(
        objax_python,
        tmp_path,
        """
module = build("model")
ckpt = objax.io.Checkpoint("run", keep_ckpts=2, verbose=False)
saved = {}
for seed, idx in ((1, 8), (2, 9), (3, 10)):
    fill(module, seed)
    ckpt.save(module.vars(), idx)
    saved[idx] = dump(module.vars())
emit(saved)
""",
    )

    ckpt = objio.io.Checkpoint(tmp_path / "run", keep_ckpts=2)
    assert ckpt.indices() == [9, 10]
    module = ours.build("model")
    assert ckpt.restore(module.vars()) == (10, f"{tmp_path}/run/ckpt/0000000010.npz")
    assert ours.dump(module.vars()) == saved["10"]
    assert ckpt.restore(module.vars(), idx=9)[0] == 9
    assert ours.dump(module.vars()) == saved["9"]


def test_objax_restores_objio_checkpoints(objax_python: str, tmp_path: Path) -> None:
    module = ours.build("model")
    ckpt = objio.io.Checkpoint(tmp_path / "run", keep_ckpts=2)
    saved = {}
    for seed, idx in ((1, 8), (2, 9), (3, 10)):
        ours.fill(module, seed)
        ckpt.save(module.vars(), idx)
        saved[idx] = ours.dump(module.vars())

    restored = run_objax(
        objax_python,
        tmp_path,
        """
import os
module = build("model")
ckpt = objax.io.Checkpoint("run", keep_ckpts=2, verbose=False)
idx, path = ckpt.restore(module.vars())
latest = dump(module.vars())
ckpt.restore(module.vars(), idx=9)
emit({"files": sorted(os.listdir("run/ckpt")), "idx": idx, "path": path, "latest": latest, "9": dump(module.vars())})
""",
    )

    assert restored["files"] == ["0000000009.npz", "0000000010.npz"]  # no temp file left for Objax to see
    assert (restored["idx"], restored["path"]) == (10, "run/ckpt/0000000010.npz")
    assert restored["latest"] == saved[10]
    assert restored["9"] == saved[9]


# -- Objax's own collections through objio, in the Objax environment ---------------------------------
#
# objio runs inside the Objax 1.8 venv here: the child puts this checkout first on sys.path, and adds
# this environment's site-packages *after* the Objax venv's own, so Objax keeps its jax and numpy and
# objio finds what that venv lacks (fsspec, pluggy, tqdm, and s3fs with the objio-s3 entry point).

OBJIO_PRELUDE = f"""
import site
import sys

site.addsitedir({sysconfig.get_paths()["purelib"]!r})
sys.path[:0] = [{os.fspath(REPO)!r}, {os.fspath(REPO / "plugins" / "objio-s3")!r}]
import objio
assert objio.__file__.startswith({os.fspath(REPO)!r}), objio.__file__
"""

OPTIMIZED = """
class Net(objax.Module):
    def __init__(self):
        self.conv = objax.nn.Conv2D(3, 4, 3)
        self.bn = objax.nn.BatchNorm2D(4)
        self.fc = objax.nn.Linear(4, 2)


class Trainer(objax.Module):
    \"\"\"A model with Conv2D, BatchNorm and Linear, and the state of two optimizers over it.\"\"\"

    def __init__(self):
        self.net = Net()
        self.momentum = objax.optimizer.Momentum(self.net.vars())
        self.adam = objax.optimizer.Adam(self.net.vars())


def saved_names(f):
    with np.load(f) as data:
        return [str(n) for n in data["names"]]
"""


def run_objax_with_objio(objax_python: str, cwd: Path, script: str) -> Any:
    """``run_objax`` with objio importable in the child and the optimizer model of ``OPTIMIZED`` defined."""
    return run_objax(objax_python, cwd, OBJIO_PRELUDE + OPTIMIZED + script)


CHECKPOINT_ROUND_TRIP = """
trainer = Trainer()
fill(trainer, seed=3)
vc = trainer.vars()
ckpt = objio.io.Checkpoint(LOGDIR, keep_ckpts=2)
ckpt.save(vc, 7)
storage = objio.open_storage(LOGDIR)
with storage.open_reader("ckpt/0000000007.npz") as f:
    objio_names = saved_names(f)
with storage.open_writer("objax.npz") as f:  # what objax.io writes, for the same collection
    objax.io.save_var_collection(f, vc)
with storage.open_reader("objax.npz") as f:
    objax_names = saved_names(f)

restored = Trainer()
fill(restored, seed=11)
idx, path = ckpt.restore(restored.vars())

cross = Trainer()  # objax.io reads objio's checkpoint
fill(cross, seed=12)
with storage.open_reader("ckpt/0000000007.npz") as f:
    objax.io.load_var_collection(f, cross.vars())

back = Trainer()  # objio reads objax.io's file into a collection that holds optimizer state
fill(back, seed=13)
objio.io.load_var_collection(LOGDIR + "/objax.npz", back.vars())

emit({
    "names": len(vc), "objio_names": objio_names, "objax_names": objax_names, "idx": idx, "path": path,
    "saved": dump(vc), "restored": dump(restored.vars()), "cross": dump(cross.vars()), "back": dump(back.vars()),
})
"""


def check_checkpoint_round_trip(result: dict[str, Any], logdir: str) -> None:
    # 8 model arrays, Momentum adds 6 (its TrainRefs are stored as their targets), Adam 13 (m, v, step).
    assert (result["names"], len(result["objio_names"])) == (39, 27)
    assert result["objio_names"] == result["objax_names"]  # stored once, under the same first names
    assert (result["idx"], result["path"]) == (7, f"{logdir}/ckpt/0000000007.npz")
    assert any("(Adam).m(ModuleList)" in name for name in result["saved"])
    assert result["restored"] == result["saved"]
    assert result["cross"] == result["saved"]
    assert result["back"] == result["saved"]


def test_objax_optimizer_state_checkpoints_to_local_disk(objax_python: str, tmp_path: Path) -> None:
    logdir = os.fspath(tmp_path / "run")
    result = run_objax_with_objio(objax_python, tmp_path, f"LOGDIR = {logdir!r}\n" + CHECKPOINT_ROUND_TRIP)
    check_checkpoint_round_trip(result, logdir)


def test_objax_optimizer_state_checkpoints_to_s3(objax_python: str, tmp_path: Path, bucket: str) -> None:
    logdir = f"s3://{bucket}/run"
    result = run_objax_with_objio(objax_python, tmp_path, f"LOGDIR = {logdir!r}\n" + CHECKPOINT_ROUND_TRIP)
    check_checkpoint_round_trip(result, logdir)


def test_objio_variable_collection_wraps_objax_collections(objax_python: str, tmp_path: Path) -> None:
    result = run_objax_with_objio(
        objax_python,
        tmp_path,
        """
trainer = Trainer()
fill(trainer, seed=4)
wrapped = objio.VarCollection(trainer.vars())
objio.io.save_var_collection("wrapped.npz", wrapped, metadata={"step": 3})
objio.io.save_var_collection("direct.npz", trainer.vars())
emit({"wrapped": saved_names("wrapped.npz"), "direct": saved_names("direct.npz"),
      "metadata": objio.read_metadata("wrapped.npz")})
""",
    )
    assert result["wrapped"] == result["direct"] and len(result["direct"]) == 27
    assert result["metadata"] == {"step": 3}


# The S3 fixtures of the objio-s3 plugin's tests (moto_server on 127.0.0.1, a fresh bucket per test).
_spec = importlib.util.spec_from_file_location("_objio_s3_fixtures", REPO / "plugins/objio-s3/tests/conftest.py")
assert _spec is not None and _spec.loader is not None
_s3_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_s3_fixtures)
moto_endpoint = _s3_fixtures.moto_endpoint
s3_client = _s3_fixtures.s3_client
bucket = _s3_fixtures.bucket
