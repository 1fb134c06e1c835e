"""The built-in backends run the whole conformance suite, through the plugin path users take."""

from __future__ import annotations

import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from objio.testing import StorageConformance


class TestLocalConformance(StorageConformance):
    @pytest.fixture
    def storage_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "root")


class TestFileUrlConformance(StorageConformance):
    @pytest.fixture
    def storage_url(self, tmp_path: Path) -> str:
        return (tmp_path / "root").as_uri()


class TestMemoryConformance(StorageConformance):
    cross_process = False

    @pytest.fixture
    def storage_url(self) -> str:
        return f"memory://{uuid.uuid4().hex}/run"


class _IsolatedMemoryFileSystem(MemoryFileSystem):
    """fsspec's memory file system under a protocol that only the generic fallback can serve."""

    protocol = "objiotestfs"
    store: dict = {}  # noqa: RUF012 - fsspec's memory fs keeps class-level state by design
    pseudo_dirs = [""]  # noqa: RUF012


fsspec.register_implementation("objiotestfs", _IsolatedMemoryFileSystem, clobber=True)


class TestFsspecFallbackConformance(StorageConformance):
    cross_process = False  # the store above lives in this process

    @pytest.fixture
    def storage_url(self) -> str:
        return f"objiotestfs://{uuid.uuid4().hex}/run"

    def test_declares_what_it_lacks(self, storage) -> None:
        assert type(storage).__name__ == "FsspecStorage"
        assert not storage.capabilities.atomic_commit
        assert not storage.capabilities.create_only
