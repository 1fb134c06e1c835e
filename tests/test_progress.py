"""objio.progress and the counting stream of objio.io._files: bars, callbacks, quiet mode, the INFO log."""

from __future__ import annotations

import doctest
import io
import logging
import sys
import types
from pathlib import Path

import pytest

import objio.progress
from objio.io._files import CountingStream, open_for_read, open_for_write, tracked
from objio.progress import Tracker, format_size, track


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal, as stderr does when a person watches."""

    def isatty(self) -> bool:
        return True


def test_module_examples_run() -> None:
    result = doctest.testmod(objio.progress)
    assert result.attempted >= 3 and result.failed == 0


def test_callback_receives_bytes_done_total_and_name(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    path = tmp_path / "blob.bin"
    with open_for_write(path, progress=lambda *a: calls.append(a), total=12) as stream:
        stream.write(b"hello ")
        stream.write(memoryview(b"world!"))
    assert path.read_bytes() == b"hello world!"
    assert calls == [(6, 12, str(path)), (12, 12, str(path))]


def test_reads_and_readinto_are_counted_and_total_defaults_to_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(100)))
    calls: list[tuple[int, int, str]] = []
    with open_for_read(path, progress=lambda *a: calls.append(a)) as stream:
        assert stream.read(10) == bytes(range(10))
        buffer = bytearray(90)
        assert stream.readinto(buffer) == 90
        assert stream.read() == b""
    assert [c[:2] for c in calls] == [(10, 100), (100, 100)]


def test_progress_false_without_action_leaves_the_stream_unwrapped() -> None:
    raw = io.BytesIO()
    with tracked(raw, False, total=None, name="x") as stream:
        assert stream is raw


def test_a_bar_is_drawn_when_asked_and_not_when_the_output_is_not_a_terminal() -> None:
    terminal = _Terminal()
    with track(True, total=4096, name="net.npz", action="saved", file=terminal) as tracker:
        tracker.advance(4096)
    assert "saving net.npz" in terminal.getvalue() and "4.00k" in terminal.getvalue()

    piped = io.StringIO()  # auto mode: not a terminal, so quiet
    with track(None, total=4096, name="net.npz", action="saved", file=piped) as tracker:
        tracker.advance(4096)
    assert piped.getvalue() == ""

    never = _Terminal()
    with track(False, total=4096, name="net.npz", file=never) as tracker:
        tracker.advance(4096)
    assert never.getvalue() == "" and tracker.done == 4096


def test_auto_mode_in_a_terminal_waits_a_moment_before_drawing() -> None:
    terminal = _Terminal()
    with track(None, total=10, name="small.npz", file=terminal) as tracker:
        tracker.advance(10)  # done well within AUTO_DELAY_S: nothing drawn
    assert terminal.getvalue() == ""


def test_info_log_says_what_was_done_with_size_and_seconds(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="objio"), track(False, total=3072, name="run/1.npz", action="saved") as t:
        t.advance(3072)
    (record,) = [r for r in caplog.records if r.name == "objio"]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("saved run/1.npz: 3.0 KiB in ")
    assert " s" in record.getMessage()


def test_nothing_is_logged_when_the_transfer_fails(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    path = tmp_path / "never.bin"
    with caplog.at_level(logging.INFO, logger="objio"), pytest.raises(RuntimeError, match="boom"):
        with open_for_write(path, action="saved") as stream:
            stream.write(b"partial")
            raise RuntimeError("boom")
    assert not path.exists()
    assert [r for r in caplog.records if r.name == "objio"] == []


def test_a_bad_progress_argument_is_a_type_error_naming_what_is_accepted() -> None:
    with pytest.raises(TypeError, match=r"progress= takes None \(auto\), True, False or a callable"):
        with track("yes", total=1, name="x"):  # type: ignore[arg-type]
            pass


def test_tracker_ignores_zero_and_counting_stream_passes_other_calls_through() -> None:
    tracker = Tracker(0, "x", None)
    stream = CountingStream(io.BytesIO(b"abc"), tracker)
    tracker.advance(0)
    assert stream.seek(1) == 1 and stream.tell() == 1 and stream.read() == b"bc"
    assert tracker.done == 2


def test_format_size() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 5 << 20)] == ["0 B", "1023 B", "1.0 KiB", "5.0 MiB"]


def test_auto_mode_counts_a_jupyter_kernel_as_someone_watching(monkeypatch: pytest.MonkeyPatch) -> None:
    class ZMQInteractiveShell:  # the class name IPython's kernel shell has
        pass

    fake_ipython = types.ModuleType("IPython")
    fake_ipython.get_ipython = ZMQInteractiveShell  # type: ignore[attr-defined]
    assert objio.progress._interactive(io.StringIO()) is False
    monkeypatch.setitem(sys.modules, "IPython", fake_ipython)
    assert objio.progress._interactive(io.StringIO()) is True
    assert objio.progress._interactive(_Terminal()) is True


def test_a_stream_nobody_watches_is_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    # Auto mode, output not a terminal, no INFO log: counting would cost every save and load for nothing (issue 10).
    raw = io.BytesIO()
    caplog.set_level(logging.WARNING, logger="objio")
    with tracked(raw, None, total=None, name="x", action="saved") as s:
        assert s is raw
    caplog.set_level(logging.INFO, logger="objio")
    with tracked(raw, None, total=None, name="x", action="saved") as s:
        assert isinstance(s, CountingStream)
        s.write(b"abc")
    assert [r.getMessage().split(" in ")[0] for r in caplog.records if r.name == "objio"] == ["saved x: 3 B"]


def test_watched_says_whether_anything_shows_a_transfer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="objio")
    assert objio.progress.watched(True) and objio.progress.watched(lambda *a: None)
    assert not objio.progress.watched(False, "saved") and not objio.progress.watched(None, "saved", io.StringIO())
    assert objio.progress.watched(None, file=_Terminal())
    caplog.set_level(logging.INFO, logger="objio")
    assert objio.progress.watched(False, "saved") and not objio.progress.watched(False, None)
    with pytest.raises(TypeError, match=r"progress= takes None \(auto\), True, False or a callable"):
        objio.progress.watched("yes")  # type: ignore[arg-type]


def test_a_read_nobody_watches_does_not_ask_the_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from objio.backends.local import LocalStorage

    path = tmp_path / "blob.bin"
    path.write_bytes(b"abc")

    def no_size(self: LocalStorage, key: str) -> int:
        raise AssertionError("size asked")

    monkeypatch.setattr(LocalStorage, "size", no_size)
    with open_for_read(path, progress=False, action="loaded") as stream:
        assert stream.read() == b"abc"
    with pytest.raises(AssertionError, match="size asked"), open_for_read(path, progress=lambda *a: None):
        pass
