"""``import objio`` does no work (issue 7, item 1), and no module of objio or its plugins imports itself back."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parent.parent
_PACKAGES = [_REPO / "objio", *sorted(_REPO.glob("plugins/*/objio_*"))]


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )


def test_import_starts_no_jax_backend_builds_no_plugin_manager_and_leaves_the_environment_alone() -> None:
    # jax._src.xla_bridge._backends is the cache jax.devices() fills; JAX has no public "is a backend
    # up?" question. The environment is compared after `import jax`, which sets variables of its own.
    result = _run(
        """
        import os, sys
        import jax
        environment = dict(os.environ)
        import objio
        from jax._src import xla_bridge
        print(dict(xla_bridge._backends))
        print(os.environ == environment)
        print("objio._host" not in sys.modules or objio._host._host is None)
        print(sorted(m for m in sys.modules if m.startswith(("objio_", "s3fs", "gcsfs", "objio.backends"))))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["{}", "True", "True", "[]"]


def test_checkpoints_pytrees_and_hookimpl_are_imported_on_first_use() -> None:
    # A save or load of one local file never needs the multi-process machinery or pluggy (issue 10).
    result = _run(
        """
        import sys
        import objio
        heavy = ("objio.io.checkpoint", "objio.io._convert", "objio.tree", "objio.multihost", "pluggy")
        print(sorted(m for m in heavy if m in sys.modules))
        from objio import Checkpoint
        from objio.io import convert
        print(Checkpoint is objio.io.Checkpoint is objio.io.checkpoint.Checkpoint, convert.__module__)
        print(objio.load_tree.__module__, "save_tree" in dir(objio), "Checkpoint" in dir(objio.io))
        print(type(objio.hookimpl).__name__)
        try:
            objio.no_such_name
        except AttributeError as e:
            print(e)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "[]",
        "True objio.io._convert",
        "objio.tree True True",
        "HookimplMarker",
        "module 'objio' has no attribute 'no_such_name'",
    ]


def test_the_default_generator_is_built_on_first_use() -> None:
    result = _run(
        """
        import objio
        from jax._src import xla_bridge
        first = objio.random.DEFAULT_GENERATOR
        from objio.random import DEFAULT_GENERATOR
        print(first is DEFAULT_GENERATOR, bool(xla_bridge._backends), objio.random.normal((2,)).shape)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True True (2,)"


def test_jax_distributed_initialize_runs_after_import_objio() -> None:
    result = _run(
        """
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        import objio
        import jax
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=1, process_id=0)
        print(jax.process_count())
        jax.distributed.shutdown()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def _module_name(path: Path) -> str:
    root = next(p for p in _PACKAGES if p == path.parent or p in path.parents)
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """Modules of ``known`` that ``module`` imports anywhere (functions included), except for type checking."""
    tree = ast.parse(path.read_text(), str(path))
    type_checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_checking.update(id(n) for child in node.body for n in ast.walk(child))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def test_no_import_cycles_in_objio_or_its_plugins() -> None:
    files = {_module_name(p): p for root in _PACKAGES for p in root.rglob("*.py")}
    graph = {module: _imports(path, module, set(files)) for module, path in files.items()}
    # A package's __init__ importing its own submodules is how packages work; a submodule importing
    # its package back is the cycle this test looks for, so only parent -> child edges are dropped.
    graph = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    cycles = _cycles(graph)
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module", ["objio.urls", "objio.errors"])
def test_leaf_modules_import_nothing_of_objio_but_errors(module: str) -> None:
    files = {_module_name(p): p for root in _PACKAGES for p in root.rglob("*.py")}
    assert _imports(files[module], module, set(files)) <= {"objio.errors"}
