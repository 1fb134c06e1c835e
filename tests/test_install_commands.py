"""The install commands in the docs and READMEs work, and name the plugins the way objio's own hint does."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

from objio import urls

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([*ROOT.glob("docs/*.rst"), ROOT / "README.md", *ROOT.glob("plugins/*/README.md")])
PLUGINS = sorted(set(urls.DISTRIBUTION_FOR_SCHEME.values()))  # objio-gcs, objio-s3


def _commands() -> list[tuple[str, str]]:
    """``(page, command)`` for every ``pip install ...`` on the pages, up to a comment, a code span's end or ``&&``."""
    found = []
    for page in PAGES:
        for match in re.finditer(r"pip install [^`\n#;&]*", page.read_text()):
            found.append((page.relative_to(ROOT).as_posix(), match.group(0).strip()))
    return found


def _extras_of(project: Path) -> set[str]:
    """The extras of a project of this repository, as installed in the test environment."""
    distribution = "objio" if project == ROOT else project.name
    return set(importlib.metadata.metadata(distribution).get_all("Provides-Extra") or [])


def test_the_pages_have_install_commands() -> None:
    pages = {page for page, _ in _commands()}
    assert {"README.md", "docs/quickstart.rst", "plugins/objio-s3/README.md", "plugins/objio-gcs/README.md"} <= pages


@pytest.mark.parametrize(("page", "command"), _commands())
def test_every_editable_install_names_a_project_and_extras_that_exist(page: str, command: str) -> None:
    for target in re.findall(r"-e\s+(\S+)", command):
        path, _, extras = target.strip("'\"").partition("[")
        if path.startswith("<checkout>/"):  # a placeholder for the clone's path
            path = path[len("<checkout>/") :]
        project = ROOT / path
        assert (project / "pyproject.toml").is_file(), f"{page}: {command!r} installs {path!r}, which is no project"
        wanted = set(extras.rstrip("]").split(",")) - {""}
        missing = wanted - _extras_of(project.resolve())
        assert not missing, f"{page}: {command!r} names extras {sorted(missing)} that {path} does not define"


@pytest.mark.parametrize(("page", "command"), _commands())
def test_a_plugin_is_installed_the_way_the_missing_backend_error_says(
    page: str, command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if not any(plugin in command for plugin in PLUGINS) and not re.search(r"\[(s3|gcs)\]", command):
        return  # installs objio itself, an extra of its own, or an example
    if re.search(r"\[(\w+,)*(test|bench)\]|\[test,", command):
        return  # a plugin's own test or bench dependencies, for developers
    monkeypatch.setattr(urls, "_checkout_root", lambda: tmp_path)  # as if objio were installed from the index
    published = {urls.install_hint(scheme) for scheme in urls.DISTRIBUTION_FOR_SCHEME}
    from_a_clone = {f"pip install -e '.[{p.removeprefix('objio-')}]' -e ./plugins/{p}" for p in PLUGINS}
    as_the_clone_hint_says = {f"pip install -e <checkout>/plugins/{p}" for p in PLUGINS}
    documented = sorted(published | from_a_clone)
    assert command in published | from_a_clone | as_the_clone_hint_says, (
        f"{page}: {command!r} is not how objio says to install a plugin; write one of {documented}"
    )


def test_the_clone_hint_names_the_plugin_folder() -> None:
    assert urls.install_hint("s3") == f"pip install -e {urls._shell_path(ROOT / 'plugins' / 'objio-s3')}"
