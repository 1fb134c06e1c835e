"""The documentation builds with Sphinx, warnings as errors (a broken autodoc or reST fails here).

The pages' examples themselves run as doctests: pytest collects ``docs/*.rst``.
"""

import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    out = tmp_path / "html"
    # A child process: Sphinx and docutils keep global state, and their own deprecation warnings
    # are not ours to turn into test errors.
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"sphinx failed:\n{result.stdout}\n{result.stderr}"
    for page in ("index", "loading_and_saving", "backends", "api"):
        assert (out / f"{page}.html").is_file(), page
    api = (out / "api.html").read_text(encoding="utf-8")
    for documented in ("objio.io.save_var_collection", "objio.io.Checkpoint", "objio.storage.Storage"):
        assert f'id="{documented}"' in api, f"autodoc did not document {documented}"
