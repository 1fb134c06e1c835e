"""Run the documentation's examples (``docs/*.rst``, collected as doctests) in a fresh folder each."""

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples save ``net.npz``, ``save_folder/`` ...: write them to a temporary folder, not the repo."""
    monkeypatch.chdir(tmp_path)
