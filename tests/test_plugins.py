"""The plugin host: entry-point discovery, the opt-out, errors that say what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import objio
from objio.errors import BackendNotFoundError

_FAKE_PLUGIN = """
import objio
from objio.backends.memory import MemoryBackend

_backend = MemoryBackend()

@objio.hookimpl
def objio_storage(url, options):
    if not url.startswith("fake://"):
        return None
    storage = _backend.objio_storage(url="memory://" + url[len("fake://"):], options=options)
    storage.url = url
    return storage
"""

_MISSPELT_PLUGIN = """
import objio

@objio.hookimpl
def objio_storag(url, options):
    return None
"""


def _install_fake_distribution(site: Path, module: str, source: str) -> None:
    """A minimal installed distribution that declares one entry point in the 'objio' group."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[objio]\n{module} = {module}\n")


def _run(code: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environ)


def test_a_third_party_backend_is_found_through_its_entry_point(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio_fake", _FAKE_PLUGIN)
    result = _run(
        """
        import jax.numpy as jnp, objio
        ckpt = objio.Checkpoint("fake://bucket/run", keep_ckpts=2)
        vc = objio.VarCollection({"w": objio.TrainVar(jnp.arange(3.0))})
        ckpt.save(vc, 1)
        print(ckpt.restore(vc))
        """,
        site=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 'fake://bucket/run/ckpt/0000000001.npz')"


def test_autoload_can_be_disabled(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio_fake", _FAKE_PLUGIN)
    result = _run("import objio; objio.open_storage('fake://b')", site=tmp_path, OBJIO_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode != 0
    assert "BackendNotFoundError: no objio backend handles 'fake://b'" in result.stderr


def test_a_misspelt_hook_is_an_error_not_silence(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio_typo", _MISSPELT_PLUGIN)
    result = _run("import objio; objio.open_storage('/tmp')", site=tmp_path)
    assert result.returncode != 0
    assert "PluginValidationError" in result.stderr and "objio_storag" in result.stderr


def test_import_does_no_work() -> None:
    result = _run("import objio, objio._host as h; print(h._manager is None)")
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.parametrize(("url", "dist"), [("s3://bucket/run", "objio-s3"), ("gs://bucket/run", "objio-gcs")])
def test_a_cloud_url_without_its_plugin_names_the_package(url: str, dist: str) -> None:
    result = _run(f"import objio; objio.Checkpoint({url!r}, keep_ckpts=1)", OBJIO_DISABLE_PLUGIN_AUTOLOAD="1")
    assert f"{dist} is not installed" in result.stderr and "pip install" in result.stderr


def test_an_unknown_scheme_is_a_backend_not_found_error() -> None:
    with pytest.raises(BackendNotFoundError, match="no objio backend handles 'nosuch://x'") as caught:
        objio.open_storage("nosuch://x")
    assert isinstance(caught.value, ValueError)


def test_builtin_backends_are_registered_as_plugins() -> None:
    names = {name for name, _ in objio.get_plugin_manager().list_name_plugin()}
    assert {"objio.local", "objio.memory", "objio.fsspec-fallback"} <= names


def test_builtin_backends_refuse_options_they_do_not_take(tmp_path: Path) -> None:
    with pytest.raises(objio.StorageOptionsError, match="takes no storage options") as caught:
        objio.open_storage(tmp_path, {"anon": True})
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, ValueError)
