"""The plugin host: entry-point discovery, opt-outs, broken plugins, errors that say what to install.

Plugins here are real distributions: a module and a ``*.dist-info`` folder with ``METADATA`` and
``entry_points.txt``, put on ``PYTHONPATH`` of a fresh interpreter, which ``importlib.metadata`` finds
exactly as it finds one that pip installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import objio
from objio import _host
from objio.errors import BackendNotFoundError

_FAKE_PLUGIN = """
import objio
from objio.backends.memory import MemoryBackend

_backend = MemoryBackend()

@objio.hookimpl
def objio_storage(url, options):
    if objio.urls.scheme_of(url) != "fake":
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

_FAILING_IMPORT_PLUGIN = """
import objio
import acme_sdk_that_is_not_installed
"""

_REENTRANT_PLUGIN = """
import objio
objio.open_storage("memory://at-import")  # a plugin that uses objio while objio loads it
"""

# A careless plugin whose hook claims every URL, local paths included.
_GREEDY_PLUGIN = """
import objio
from objio.backends.memory import MemoryBackend

@objio.hookimpl
def objio_storage(url, options):
    storage = MemoryBackend().objio_storage(url="memory://greedy", options=options)
    storage.url = "greedy"
    return storage
"""

_HINT_PLUGIN = """
import objio

@objio.hookimpl(optionalhook=True)
def objio_install_hint(scheme):
    return "pip install 'acme-objio[azure]'" if scheme == "acmeaz" else None
"""

# Saves locally and prints what the broken plugin's own scheme says, for the broken-plugin tests.
_LOCAL_STILL_WORKS = """
import sys, tempfile, warnings
import jax.numpy as jnp, objio
warnings.simplefilter("always")
with tempfile.TemporaryDirectory() as folder:
    vc = objio.VarCollection({"w": objio.TrainVar(jnp.arange(3.0))})
    objio.save_var_collection(folder + "/net.npz", vc)
    objio.load_var_collection(folder + "/net.npz", vc)
    objio.open_storage("memory://x")
print("local ok")
try:
    objio.open_storage(sys.argv[1] + "://bucket/run")
except objio.BackendNotFoundError as e:
    print(e)
"""


def _install_fake_distribution(site: Path, dist: str, entry_point: str, source: str) -> None:
    """A minimal installed distribution that declares one entry point in the 'objio' group."""
    module = dist.replace("-", "_")
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[objio]\n{entry_point} = {module}\n")


def _run(code: str, *args: str, site: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, **env}
    for name in (_host.DISABLE_AUTOLOAD_ENV, _host.DISABLE_PLUGINS_ENV):
        if name not in env:
            environ.pop(name, None)
    if site is not None:
        environ["PYTHONPATH"] = os.pathsep.join([str(site), environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, env=environ, timeout=300
    )


def test_a_third_party_backend_is_found_through_its_entry_point(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio-fake", "fake", _FAKE_PLUGIN)
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


def test_local_paths_are_the_local_backend_and_need_no_plugin_loaded(tmp_path: Path) -> None:
    # Loading the plugins (an entry-point scan and their imports) was most of a first save's time
    # (issue 10); local disk is the built-in backend whatever is installed, asked directly or
    # through the plugin manager, where its hook is tryfirst.
    _install_fake_distribution(tmp_path, "objio-greedy", "greedy", _GREEDY_PLUGIN)
    result = _run(
        """
        import sys, tempfile
        import jax.numpy as jnp, objio
        from objio import _host
        with tempfile.TemporaryDirectory() as folder:
            vc = objio.VarCollection({"w": objio.TrainVar(jnp.arange(3.0))})
            objio.save_var_collection(folder + "/net.npz", vc)
            objio.load_var_collection("file://" + folder + "/net.npz", vc)
            print(type(objio.open_storage(folder)).__name__, _host._host is None, "objio_greedy" in sys.modules)
            print("pluggy" in sys.modules)
            manager = objio.get_plugin_manager()
            for url in (folder, "file://" + folder, "memory://x"):
                storage = manager.hook.objio_storage(url=url, options={})
                print(type(storage).__name__, storage.url == url, storage.url == "greedy")
        print("objio_greedy" in sys.modules)
        """,
        site=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "LocalStorage True False",
        "False",
        "LocalStorage True False",
        "LocalStorage True False",
        "MemoryStorage False True",  # the greedy plugin's: it is asked before the built-in memory backend
        "True",
    ]


def test_autoload_can_be_disabled_and_the_error_says_so(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio-fake", "fake", _FAKE_PLUGIN)
    result = _run(_LOCAL_STILL_WORKS, "fake", site=tmp_path, OBJIO_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "local ok",
        "no objio backend for fake:// URLs such as 'fake://bucket/run': the plugin 'fake' of objio-fake is "
        "installed but disabled (OBJIO_DISABLE_PLUGIN_AUTOLOAD is set)",
    ]
    assert "Warning" not in result.stderr  # a plugin the user disabled is no surprise


def test_one_plugin_can_be_disabled_by_its_distribution_name(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio-fake", "fake", _FAKE_PLUGIN)
    result = _run(_LOCAL_STILL_WORKS, "fake", site=tmp_path, OBJIO_DISABLE_PLUGINS="acme, Objio_Fake")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == (
        "no objio backend for fake:// URLs such as 'fake://bucket/run': the plugin 'fake' of objio-fake is "
        "installed but disabled (OBJIO_DISABLE_PLUGINS=acme, Objio_Fake)"
    )


@pytest.mark.parametrize(("scheme", "dist"), [("s3", "objio-s3"), ("gs", "objio-gcs")])
def test_our_own_disabled_plugin_is_named_not_called_missing(scheme: str, dist: str) -> None:
    result = _run(_LOCAL_STILL_WORKS, scheme, OBJIO_DISABLE_PLUGINS=dist)
    assert result.returncode == 0, result.stderr
    message = result.stdout.splitlines()[1]
    assert message.startswith(f"no objio backend for {scheme}:// URLs such as '{scheme}://bucket/run': the plugin ")
    assert message.endswith(f"of {dist} is installed but disabled (OBJIO_DISABLE_PLUGINS={dist})")
    assert "not installed" not in message


@pytest.mark.parametrize(
    ("source", "cause"),
    [
        (_MISSPELT_PLUGIN, "PluginValidationError: unknown hook 'objio_storag'"),
        (_FAILING_IMPORT_PLUGIN, "ModuleNotFoundError: No module named 'acme_sdk_that_is_not_installed'"),
        (_REENTRANT_PLUGIN, "ObjioError: objio was called while its plugins were being imported"),
    ],
    ids=["misspelt-hook", "failing-import", "calls-objio-at-import"],
)
def test_a_broken_plugin_is_skipped_with_one_warning_and_named_by_its_scheme(
    tmp_path: Path, source: str, cause: str
) -> None:
    _install_fake_distribution(tmp_path, "objio-acme", "acme", source)
    result = _run(_LOCAL_STILL_WORKS, "acme", site=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("RuntimeWarning: objio skipped the plugin 'acme' of objio-acme failed to load") == 1
    assert cause in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "local ok"
    assert lines[1].startswith(
        f"no objio backend for acme:// URLs such as 'acme://bucket/run': the plugin 'acme' of objio-acme failed to "
        f"load ({cause}"
    )


def test_a_broken_plugin_is_named_for_a_scheme_nobody_serves(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio-acme", "acme", _FAILING_IMPORT_PLUGIN)
    result = _run(_LOCAL_STILL_WORKS, "acmeblob", site=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].endswith(
        "; it may be one that did not load: the plugin 'acme' of objio-acme failed to load "
        "(ModuleNotFoundError: No module named 'acme_sdk_that_is_not_installed')"
    )


def test_a_third_party_plugin_supplies_its_own_install_hint(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "acme-objio", "acme", _HINT_PLUGIN)
    result = _run(_LOCAL_STILL_WORKS, "acmeaz", site=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == (
        "no objio backend handles 'acmeaz://bucket/run': the backend for acmeaz:// is not installed; install it "
        "with `pip install 'acme-objio[azure]'`"
    )


def test_other_threads_wait_for_the_manager_while_it_is_built(tmp_path: Path) -> None:
    # The plugin, imported while the manager is built, starts a thread that asks for a storage: that
    # thread must wait for the finished manager, neither get a half-built one nor an error.
    plugin = """
import threading, objio
from objio import _host
started = threading.Event()
result = []
def ask():
    started.set()
    result.append(objio.open_storage("memory://from-another-thread"))
other = threading.Thread(target=ask)
other.start()
started.wait()
@objio.hookimpl
def objio_storage(url, options):
    return None
"""
    _install_fake_distribution(tmp_path, "objio-slow", "slow", plugin)
    result = _run(
        """
        import sys, objio
        objio.open_storage("memory://main")
        objio_slow = sys.modules["objio_slow"]
        objio_slow.other.join(60)
        print(type(objio_slow.result[0]).__name__)
        """,
        site=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "MemoryStorage"


def test_a_cloud_url_without_its_plugin_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_host, "_load_entry_points", lambda pm: [])  # as if objio-s3 were not installed
    host = _host._build_host()
    message = _host._no_backend_message(host, "s3://bucket/run")
    checkout = Path(objio.__file__).resolve().parent.parent
    assert message == (
        f"no objio backend handles 's3://bucket/run': the backend for s3:// is not installed; install it with "
        f"`pip install -e {checkout / 'plugins' / 'objio-s3'}`"
    )


def test_an_unknown_scheme_is_a_backend_not_found_error() -> None:
    with pytest.raises(BackendNotFoundError, match="no objio backend handles 'nosuch://x'") as caught:
        objio.open_storage("nosuch://x")
    assert isinstance(caught.value, ValueError)


def test_builtin_backends_are_registered_as_plugins() -> None:
    names = {name for name, _ in objio.get_plugin_manager().list_name_plugin()}
    assert {"objio.local", "objio.memory", "objio.fsspec-fallback", "objio.install-hints"} <= names


def test_builtin_backends_refuse_options_they_do_not_take(tmp_path: Path) -> None:
    with pytest.raises(objio.StorageOptionsError, match="the local backend takes no storage options, got"):
        objio.open_storage(tmp_path, {"anon": True})
    with pytest.raises(objio.StorageOptionsError, match=r"the memory backend takes no storage options, got \['x'\]"):
        objio.open_storage("memory://x", {"x": 1})


_PLUGINS_COMMAND = "import sys; from objio.cli import main; sys.exit(main(sys.argv[1:]))"


def test_the_plugins_command_lists_the_plugins_that_failed_to_load_or_are_disabled(tmp_path: Path) -> None:
    _install_fake_distribution(tmp_path, "objio-acme", "acme", _FAILING_IMPORT_PLUGIN)
    _install_fake_distribution(tmp_path, "objio-zeta", "zeta", _FAKE_PLUGIN)
    failed = (
        "the plugin 'acme' of objio-acme failed to load "
        "(ModuleNotFoundError: No module named 'acme_sdk_that_is_not_installed')"
    )
    disabled = "the plugin 'zeta' of objio-zeta is installed but disabled (OBJIO_DISABLE_PLUGINS=objio-zeta)"

    result = _run(_PLUGINS_COMMAND, "plugins", site=tmp_path, OBJIO_DISABLE_PLUGINS="objio-zeta")
    assert result.returncode == 0, result.stderr
    table, _, rest = result.stdout.partition("not in use:")
    assert "acme" not in table and "zeta" not in table  # neither is listed as a backend
    assert sorted(("not in use:" + rest).splitlines()) == [f"not in use: {failed}", f"not in use: {disabled}"]

    result = _run(_PLUGINS_COMMAND, "plugins", "--json", site=tmp_path, OBJIO_DISABLE_PLUGINS="objio-zeta")
    assert sorted(json.loads(result.stdout)["skipped"], key=lambda plugin: plugin["name"]) == [
        {
            "name": "acme",
            "distribution": "objio-acme",
            "reason": "ModuleNotFoundError: No module named 'acme_sdk_that_is_not_installed'",
            "disabled": False,
        },
        {"name": "zeta", "distribution": "objio-zeta", "reason": "OBJIO_DISABLE_PLUGINS=objio-zeta", "disabled": True},
    ]
