"""What a fresh process imports for ``import objio`` and for its first local save and load (issue 10).

The first call's cost is mostly imports: each module here costs a fraction of a millisecond, a
dataclass or a regular expression compiled at import as much again. These tests pin what the
local path imports, by name (never by time), so that a new import on it is a decision, not an accident.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from objio.storage import Capabilities

# What a save or load of one local file never needs: the plugin host and pluggy, the multi-process
# machinery, checkpoints, safetensors, progress bars, remote I/O, and the layers.
_NEVER_ON_THE_LOCAL_PATH = (
    "objio._host",
    "objio.hookspecs",
    "pluggy",
    "objio.multihost",
    "objio.io.checkpoint",
    "objio.io.background",
    "objio.io.safetensors_io",
    "objio.io.mapped",
    "objio.remote",
    "objio.nn",
    "objio.module",
    "objio.random",
    "objio.functional",
    "tqdm",
    "isal",  # a small model's CRCs are zlib's: isal is imported at the first big buffer
)


# Runs first in every child: `import jax` (the cost measured is objio's, after it), and stage(name),
# which records the modules of interest imported so far; the child prints them all as JSON at the end.
_PRELUDE = """
import json, sys
import jax, jax.numpy as jnp
import numpy as np
stages = {}
def stage(name):
    stages[name] = sorted(m for m in sys.modules if m.split(".")[0] in NAMES)
NAMES = {"objio", "pluggy", "tqdm", "isal", "safetensors", "fsspec"}
"""


def _modules_after(code: str, tmp_path: Path) -> dict[str, list[str]]:
    """Run ``code`` in a fresh process after ``import jax``: the modules imported at each ``stage(name)``."""
    script = _PRELUDE + textwrap.dedent(code) + "\nprint(json.dumps(stages))\n"
    result = subprocess.run(
        [sys.executable, "-c", script, os.fspath(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OBJIO_DISABLE_PLUGIN_AUTOLOAD": ""},
    )
    assert result.returncode == 0, result.stderr
    stages: dict[str, list[str]] = json.loads(result.stdout.splitlines()[-1])
    return stages


def _unwanted(modules: list[str]) -> list[str]:
    return sorted(m for m in modules if m.startswith(_NEVER_ON_THE_LOCAL_PATH))


def test_import_and_a_first_local_save_and_load_import_only_what_they_need(tmp_path: Path) -> None:
    stages = _modules_after(
        """
        import objio
        stage("import")
        vc = objio.VarCollection({"w": objio.TrainVar(jnp.ones((768, 1))), "b": objio.TrainVar(jnp.zeros(1))})
        objio.save_var_collection(sys.argv[1] + "/tiny.npz", vc)
        stage("save")
        objio.load_var_collection(sys.argv[1] + "/tiny.npz", vc)
        stage("load_var_collection")
        tree = objio.load_tree(sys.argv[1] + "/tiny.npz")
        stage("load_tree")
        assert sorted(tree) == ["b", "w"] and tree["w"].shape == (768, 1)
        """,
        tmp_path,
    )
    assert {stage: _unwanted(modules) for stage, modules in stages.items()} == {
        "import": [],
        "save": [],
        "load_var_collection": [],
        "load_tree": [],
    }
    # The local path's own modules are there, and nothing of objio's beyond what import needs at import.
    assert {"objio.io.save_load", "objio.variables"} <= set(stages["import"])
    assert "objio._npz_write" not in stages["import"] and "objio._npz_write" in stages["save"]
    assert "objio.backends.local" not in stages["import"] and "objio.backends.local" in stages["save"]
    # A save imports none of the reader (the strict zip reader is 1.4 ms of imports).
    assert "objio.codec" not in stages["save"] and "objio._ziparchive" not in stages["save"]
    assert "objio.codec" in stages["load_var_collection"]
    assert "objio.io._arrays" not in stages["save"] and "objio.io._arrays" in stages["load_var_collection"]
    assert "objio.tree" not in stages["load_var_collection"] and "objio.tree" in stages["load_tree"]


def test_a_first_load_imports_none_of_the_writer(tmp_path: Path) -> None:
    import numpy as np

    import objio

    objio.save_tree(tmp_path / "tiny.npz", {"w": np.ones((768, 1), np.float32)})
    stages = _modules_after(
        """
        import objio
        objio.load_tree(sys.argv[1] + "/tiny.npz")
        stage("load_tree")
        model = objio.VarCollection({"w": objio.TrainVar(jnp.zeros((768, 1)))})
        objio.load_var_collection(sys.argv[1] + "/tiny.npz", model)
        stage("load_var_collection")
        """,
        tmp_path,
    )
    for stage in ("load_tree", "load_var_collection"):
        assert [m for m in stages[stage] if m in ("objio._npz_write", "objio._zipwriter")] == []


def test_big_buffers_import_isal_and_both_crcs_agree(tmp_path: Path) -> None:
    stages = _modules_after(
        """
        import zlib
        from objio import _crc
        small, big = b"x" * 1000, bytes(range(256)) * (_crc.ISAL_FROM // 256)
        running = _crc.crc32(small)
        stage("small")
        assert running == zlib.crc32(small)
        assert _crc.crc32(big, running) == zlib.crc32(big, running)  # isal continues zlib's running value
        stage("big")
        assert _crc.crc32(small, 7) == zlib.crc32(small, 7)  # and from now on every CRC is isal's
        assert _crc.crc32_combine(zlib.crc32(small), zlib.crc32(big), len(big)) == zlib.crc32(small + big)
        """,
        tmp_path,
    )
    assert [m for m in stages["small"] if m.startswith("isal")] == []
    assert "isal.isal_zlib" in stages["big"]


def test_a_safetensors_file_is_still_told_from_an_npz_by_its_content(tmp_path: Path) -> None:
    # npz loads no longer import objio.io.safetensors_io; a safetensors file must still find it.
    import numpy as np

    import objio

    path = tmp_path / "model.bin"  # a name that says nothing: the content decides
    objio.save_tree(path, {"w": np.arange(3.0)}, format="safetensors")
    loaded = objio.load_tree(path)
    assert list(loaded) == ["w"] and loaded["w"].tolist() == [0.0, 1.0, 2.0]


def test_names_imported_on_first_use_are_the_same_objects_and_all_listed(tmp_path: Path) -> None:
    stages = _modules_after(
        """
        import objio
        assert set(objio.__all__) | {"module", "storage", "errors", "variables", "var_collection"} <= set(dir(objio))
        stage("dir")
        assert objio.nn is sys.modules["objio.nn"] and objio.nn.Linear(2, 1).w.value.shape == (2, 1)
        assert objio.module is sys.modules["objio.module"] and objio.Module is objio.module.Module
        assert objio.storage.Capabilities is objio.Capabilities and objio.Storage is objio.storage.Storage
        assert objio.open_storage is sys.modules["objio._host"].open_storage
        assert all(getattr(objio, name) is not None for name in objio.__all__)
        stage("all")
        """,
        tmp_path,
    )
    assert _unwanted(stages["dir"]) == []  # dir() lists the lazy names without importing them
    assert {"objio.nn", "objio.module", "objio.storage", "objio._host", "objio.tree"} <= set(stages["all"])


def test_capabilities_are_read_only_values() -> None:
    # A plain class since issue 10 (cheaper to define than a NamedTuple): it must still behave as a value.
    caps = Capabilities(atomic_commit=True, create_only=False, range_read=True)
    assert caps == Capabilities(True, False, True) and caps != Capabilities(True, True, True)
    assert len({caps, Capabilities(True, False, True)}) == 1
    assert (caps.atomic_commit, caps.create_only, caps.range_read) == (True, False, True)
    assert repr(caps) == "Capabilities(atomic_commit=True, create_only=False, range_read=True)"
    assert pickle.loads(pickle.dumps(caps)) == caps == copy.deepcopy(caps)
    with pytest.raises(AttributeError, match="read-only"):
        caps.create_only = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        Capabilities(True, False)  # type: ignore[call-arg]


def test_without_isal_zlib_checks_every_crc_and_big_members_save_and_load_whole(tmp_path: Path) -> None:
    # As where no isal wheel exists for the platform: importing it raises ImportError.
    stages = _modules_after(
        f"""
        import zlib
        sys.modules["isal"] = None
        import objio
        from objio import _crc
        big = np.arange(12 << 20, dtype=np.float32)  # 48 MiB: past the sizes where CRCs are split
        assert _crc.crc32(big) == zlib.crc32(big) and not _crc.can_combine()
        objio.save_tree({str(tmp_path / "big.npz")!r}, {{"big": big}})
        assert np.array_equal(objio.load_tree({str(tmp_path / "big.npz")!r})["big"], big)
        stage("done")
        """,
        tmp_path,
    )
    assert "objio._crc" in stages["done"]
