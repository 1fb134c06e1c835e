"""The built-in backends run the whole conformance suite, through the plugin path users take."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFile, MemoryFileSystem
from fsspec.spec import AbstractBufferedFile

import objio
from objio.backends.local import TEMP_SUFFIX
from objio.testing import StorageConformance, kill_when_ready


class TestLocalConformance(StorageConformance):
    @pytest.fixture
    def storage_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "root")

    @pytest.fixture
    def leftovers(self, storage_url: str) -> Callable[[], list[str]]:
        """The temp files of writers that never committed."""
        return lambda: sorted(p.name for p in Path(storage_url).rglob(f"*{TEMP_SUFFIX}"))


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


class _FlakyUploadFile(AbstractBufferedFile):
    """An upload in parts, like s3fs's: a failed part raises once, and close() publishes what arrived."""

    def _initiate_upload(self) -> None:
        self.parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if self.fs.fail_at is not None and self.offset + len(data) > self.fs.fail_at:
            self.fs.fail_at = None  # one lost connection; the next call goes through
            raise ConnectionResetError("connection reset by peer in mid-upload")
        self.parts.append(data)
        if final and self.autocommit:
            self.commit()
        return True

    def commit(self) -> None:
        self.fs.store[self.path] = MemoryFile(self.fs, self.path, b"".join(getattr(self, "parts", [])))

    def discard(self) -> None:
        self.parts = []


class _FlakyUploadFileSystem(MemoryFileSystem):
    """fsspec's memory file system whose uploads go in 1 MiB parts and can fail in the middle."""

    protocol = "objioflakyfs"
    store: dict = {}  # noqa: RUF012 - fsspec's memory fs keeps class-level state by design
    pseudo_dirs = [""]  # noqa: RUF012
    fail_at: int | None = None

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):  # type: ignore[no-untyped-def]
        if "w" not in mode:
            return super()._open(path, mode, block_size, autocommit, cache_options, **kwargs)
        return _FlakyUploadFile(self, self._strip_protocol(path), mode, block_size=1 << 20, autocommit=autocommit)


fsspec.register_implementation("objioflakyfs", _FlakyUploadFileSystem, clobber=True)


@pytest.mark.parametrize("previous", [None, b"previous"])
def test_fallback_publishes_nothing_when_the_upload_fails_half_way(previous: bytes | None) -> None:
    storage = objio.open_storage(f"objioflakyfs://{uuid.uuid4().hex}")
    if previous is not None:
        with storage.open_writer("model.npz") as f:
            f.write(previous)
    fs = _FlakyUploadFileSystem()
    fs.fail_at = 5 << 20
    with pytest.raises(objio.StorageError, match="model.npz") as caught:
        with storage.open_writer("model.npz") as f:
            f.write(b"\x01" * (8 << 20))
    assert isinstance(caught.value.__cause__, ConnectionResetError)
    assert fs.fail_at is None, "the upload never reached the failing part"
    if previous is None:
        assert not storage.exists("model.npz")
        assert storage.list() == []
    else:
        with storage.open_reader("model.npz") as f:
            assert f.read() == previous


def test_fallback_uploads_in_parts_and_commits_a_clean_write() -> None:
    storage = objio.open_storage(f"objioflakyfs://{uuid.uuid4().hex}")
    data = bytes(range(256)) * (12 << 12)  # 3 MiB: three parts
    with storage.open_writer("a/model.npz") as f:
        f.write(data)
    with storage.open_reader("a/model.npz") as f:
        assert f.read() == data
    assert storage.list() == ["a/model.npz"]


def test_known_gaps_must_name_tests_of_the_suite() -> None:
    with pytest.raises(TypeError, match=r"known_gaps names tests that do not exist: \['test_round_trp'\]"):

        class _Typo(StorageConformance):
            known_gaps = {"test_round_trip": "fine", "test_round_trp": "a typo"}  # noqa: RUF012


def test_a_known_gap_is_a_strict_expected_failure(tmp_path: Path) -> None:
    # One gap declared on a test that fails (a backend that loses listings), one on a test that
    # passes: the first is an expected failure, the second fails the run because the gap is gone.
    (tmp_path / "test_gaps.py").write_text(
        textwrap.dedent(
            """
            import uuid
            import pytest
            from objio.testing import StorageConformance

            class TestGaps(StorageConformance):
                cross_process = False
                known_gaps = {
                    "test_listing": "this medium lists nothing",
                    "test_round_trip": "believed broken, but is not",
                }

                @pytest.fixture
                def storage(self, storage_url, storage_options):
                    import objio
                    storage = objio.open_storage(storage_url, storage_options)
                    storage.list = lambda prefix="": []
                    return storage

                @pytest.fixture
                def storage_url(self):
                    return f"memory://{uuid.uuid4().hex}"
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", "-rfxX",
         "-k", "test_listing and not stale or test_round_trip", str(tmp_path / "test_gaps.py")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert "XFAIL test_gaps.py::TestGaps::test_listing - known gap: this medium lists nothing" in result.stdout
    assert "FAILED test_gaps.py::TestGaps::test_round_trip" in result.stdout
    assert "[XPASS(strict)] known gap: believed broken, but is not" in result.stdout
    assert re.search(r"^1 failed, \d+ deselected, 1 xfailed in ", result.stdout, re.MULTILINE), result.stdout


def test_kill_when_ready_says_what_the_child_did_instead() -> None:
    with pytest.raises(AssertionError, match=r"the child failed before it printed 'ready': b'oops\\n' .*boom"):
        kill_when_ready("import sys; print('oops', flush=True); sys.exit('boom')")
