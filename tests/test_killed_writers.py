"""Writers SIGKILLed on local disk, at chosen points and at random moments: a checkpoint is complete
or absent, earlier ones stay intact, and the next writer in the folder removes the dead writer's
temp file at once (its lock is free), with no age rule.

One child process imports objio once and forks a writer per trial, so a trial costs a fork, not an
interpreter start. A writer told to pause at a point says so on stdout and waits for its SIGKILL.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from objio.backends import local
from objio.codec import NpzReader

_FORKING_WRITER = r"""
import json, os, signal, sys
import numpy as np
from objio import _npz_write as codec
from objio.backends import local

def say(**message):
    # One write per message: print() writes the line and its newline separately when stdout is
    # unbuffered (PYTHONUNBUFFERED), and a SIGKILL between the two left a line without its end.
    sys.stdout.write(json.dumps({"pid": os.getpid(), **message}) + "\n")
    sys.stdout.flush()

def pause_then(original):
    def paused(*args, **kwargs):
        say(event="paused")
        signal.pause()  # until the SIGKILL
        return original(*args, **kwargs)
    return paused

def write(root, key, value, members):
    arrays = [np.full(1 << 18, value + i, np.float32) for i in range(members)]
    storage = local.LocalStorage(root)
    with storage.open_writer(key, if_absent=True) as f:
        codec.write_npz(f, [f"w{i}" for i in range(members)], arrays)

def trial(spec):
    root, point = spec["root"], spec.get("pause")
    if point == "member":  # before the member with this index (0 is names.npy)
        original, calls = codec._write_array, []
        def counting(*args):
            if len(calls) == spec["member"]:
                say(event="paused")
                signal.pause()
            calls.append(1)
            return original(*args)
        codec._write_array = counting
    elif point == "metadata":  # every array written, objio.json and the zip directory not yet
        codec._write_metadata = pause_then(codec._write_metadata)
    elif point == "fsync":
        os.fsync = pause_then(os.fsync)
    elif point == "commit":
        os.link = pause_then(os.link)
    elif point == "committed":
        local._fsync_folder = pause_then(local._fsync_folder)
    if point == "open":
        storage = local.LocalStorage(root)
        with storage.open_writer(spec["key"], if_absent=True) as f:
            f.write(b"PK")
            say(event="paused")
            signal.pause()
    if point is None:
        say(event="started")
    for key, value in spec["keys"]:
        write(root, key, value, spec["members"])
        say(event="saved", key=key)
    say(event="done")

for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            trial(json.loads(line))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    say(pid=pid, event="reaped")  # the child's pid, not ours
"""

MEMBERS = 4  # 1 MiB each


class ForkingWriter:
    """The child that forks one writer per trial; ``run(spec)`` starts one and reads its messages."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _FORKING_WRITER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self, root: Path, spec: dict[str, Any]) -> int:
        """Start a writer in ``root`` and wait until it has paused or started; its pid."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({**spec, "root": str(root)}) + "\n")
        self.process.stdin.flush()
        message = self._next()
        assert message["event"] in ("paused", "started"), message
        return int(message["pid"])

    def kill(self, pid: int) -> list[dict[str, Any]]:
        """SIGKILL the writer; what it said before dying."""
        with_error = None
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError as e:  # it finished first
            with_error = e
        said = []
        while (message := self._next())["event"] != "reaped":
            said.append(message)
        assert with_error is None or any(m["event"] == "done" for m in said)
        return said

    def _next(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the forking writer died"
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def writer() -> Iterator[ForkingWriter]:
    forking = ForkingWriter()
    try:
        yield forking
    finally:
        forking.close()


def _hidden(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(local.TEMP_SUFFIX))


def _check_complete(folder: Path, name: str, value: float) -> None:
    with open(folder / name, "rb") as f:
        reader = NpzReader(io.BytesIO(f.read()), name)
        assert reader.names == [f"w{i}" for i in range(MEMBERS)]
        for i in range(MEMBERS):
            array = reader.read(i)
            assert array.shape == (1 << 18,) and float(array[0]) == float(array[-1]) == value + i


def _save(folder: Path, name: str, value: float) -> None:
    from objio.codec import write_npz

    with local.LocalStorage(folder).open_writer(name, if_absent=True) as f:
        write_npz(
            f, [f"w{i}" for i in range(MEMBERS)], [np.full(1 << 18, value + i, np.float32) for i in range(MEMBERS)]
        )


KILL_POINTS = {
    "after-open": {"pause": "open"},
    "before-names": {"pause": "member", "member": 0},
    "mid-arrays": {"pause": "member", "member": 2},
    "before-metadata": {"pause": "metadata"},
    "before-fsync": {"pause": "fsync"},
    "before-commit": {"pause": "commit"},
    "after-commit": {"pause": "committed"},
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_writer_killed_at_a_chosen_point_leaves_nothing_partial_and_its_leftovers_go_at_once(
    point: str, tmp_path: Path, writer: ForkingWriter, fault_log: Callable[..., None]
) -> None:
    _save(tmp_path, "earlier.npz", 10.0)
    spec = {**KILL_POINTS[point], "key": "victim.npz", "keys": [["victim.npz", 1.0]], "members": MEMBERS}
    said = writer.kill(writer.start(tmp_path, spec))
    assert said == []  # it died where it paused
    committed = point == "after-commit"
    visible = sorted(n for n in os.listdir(tmp_path) if not n.startswith("."))
    assert visible == (["earlier.npz", "victim.npz"] if committed else ["earlier.npz"])
    assert len(_hidden(tmp_path)) == 1  # the killed writer's temp file (a second link, after the commit)
    _check_complete(tmp_path, "earlier.npz", 10.0)
    if committed:
        _check_complete(tmp_path, "victim.npz", 1.0)

    _save(tmp_path, "next.npz", 20.0)  # the next writer in the folder: no waiting, no age rule
    assert _hidden(tmp_path) == []
    _check_complete(tmp_path, "next.npz", 20.0)
    fault_log(fault="killed-writer-point", point=point, trials=1, committed=int(committed), leftovers_after_next_save=0)


def test_writers_killed_at_random_moments_leave_only_complete_checkpoints(
    tmp_path: Path, writer: ForkingWriter, fault_trials: Callable[[int, int], int], fault_log: Callable[..., None]
) -> None:
    trials = fault_trials(8, 60)
    rng = random.Random(os.environ.get("OBJIO_FAULT_SEED", "8"))
    outcomes: Counter[str] = Counter()
    expected: dict[str, float] = {}
    for trial in range(trials):
        keys = [[f"{trial:03d}-{k}.npz", float(trial * 10 + k)] for k in range(3)]
        pid = writer.start(tmp_path, {"keys": keys, "members": MEMBERS})
        time.sleep(rng.uniform(0, 0.1))  # the random kill point itself, not a synchronisation
        said = writer.kill(pid)
        saved = {m["key"] for m in said if m["event"] == "saved"}
        for key, value in keys:
            if (tmp_path / key).exists():
                # Listed only if complete; it may have committed just before the kill, before it said so.
                _check_complete(tmp_path, key, value)
                expected[key] = value
                outcomes["checkpoints committed"] += 1
            else:
                assert key not in saved
        leftovers = _hidden(tmp_path)
        assert len(leftovers) <= 1
        outcomes["killed mid-write" if leftovers else "killed between writes"] += 1
        _save(tmp_path, f"{trial:03d}-next.npz", -1.0)  # the next writer sweeps at once
        assert _hidden(tmp_path) == []
        expected[f"{trial:03d}-next.npz"] = -1.0
    for key, value in expected.items():  # nothing committed earlier was lost or damaged later
        _check_complete(tmp_path, key, value)
    visible = sorted(n for n in os.listdir(tmp_path) if not n.startswith("."))
    assert visible == sorted(expected)
    fault_log(fault="killed-writer-random", trials=trials, **outcomes)
