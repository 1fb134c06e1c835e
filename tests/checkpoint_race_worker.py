"""A process that saves and restores checkpoints on command, for the racing-jobs tests.

Run as a script (``python checkpoint_race_worker.py``), it prints ``ready`` and
then answers one JSON command per line on stdin with one JSON line on stdout. The tests drive two
of them through :class:`Worker`: writing a command to both workers back to back starts them at the
same moment, without sleeping, since each is already waiting on its stdin.

Commands:

Every command but ``quit`` also names the folder and its retention: ``"logdir": ..., "keep": 2``.

- ``{"op": "save", "idx": 5, "who": 1}``: save checkpoint 5 (every array holds 5, ``who`` says
  which worker wrote it); answers ``{"ok": true}`` or ``{"error": "ObjectExistsError", ...}``.
- ``{"op": "saves", "first": 1, "last": 30}``: save 1 ... 30 in order; answers the errors.
- ``{"op": "restore_until", "idx": 30}``: restore the latest over and over until checkpoint 30 is
  restored; answers how many restores, errors, fallbacks (a checkpoint gone while read) and
  inconsistent restores there were.

The scenarios at the end drive two workers and check the folder; the core's and the S3 plugin's tests
load this file by path and run them.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ARRAYS = 4
FLOATS = 64 << 10  # 256 KiB per array: reading a checkpoint takes long enough for others to act meanwhile
RESTORE_DEADLINE_S = 300.0  # a restorer whose saver died stops here instead of spinning forever


def _collection(fill: float, who: int) -> Any:
    import jax.numpy as jnp

    import objio

    variables: dict[str, Any] = {f"w{i}": objio.TrainVar(jnp.full((FLOATS,), fill, jnp.float32)) for i in range(ARRAYS)}
    variables["who"] = objio.StateVar(jnp.asarray(who, jnp.int32))
    return objio.VarCollection(variables)


def describe_restored(vc: Any) -> tuple[float, int] | None:
    """``(fill, who)`` of a restored collection, or ``None`` if its arrays disagree (a torn restore)."""
    import numpy as np

    fills = {float(v) for i in range(ARRAYS) for v in np.unique(np.asarray(vc[f"w{i}"].value))}
    return (fills.pop(), int(vc["who"].value)) if len(fills) == 1 else None


def _error(e: BaseException) -> dict[str, Any]:
    return {"error": type(e).__name__, "message": str(e)}


class _Fallbacks:
    """Counts the warnings ``restore`` logs when a checkpoint vanished while it was read."""

    def __init__(self) -> None:
        import logging

        self.count = 0
        counter = self

        class Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "disappeared while it was read" in record.getMessage():
                    counter.count += 1

        logging.getLogger("objio").addHandler(Handler())


def _serve() -> None:
    import objio

    checkpoints: dict[tuple[str, int | None], Any] = {}
    fallbacks = _Fallbacks()
    warnings.simplefilter("ignore", objio.NoCheckpointWarning)  # a restorer may start before the first save
    print("ready", flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            return
        where = (command["logdir"], command["keep"])
        if where not in checkpoints:
            checkpoints[where] = objio.Checkpoint(*where, verbose=False, progress=False)
        ckpt = checkpoints[where]
        if op == "save":
            try:
                ckpt.save(_collection(command["idx"], command["who"]), command["idx"])
                reply: dict[str, Any] = {"ok": True}
            except Exception as e:  # noqa: BLE001 (any error at all goes back to the test)
                reply = _error(e)
        elif op == "saves":
            errors = []
            for idx in range(command["first"], command["last"] + 1):
                try:
                    ckpt.save(_collection(idx, 0), idx)
                except Exception as e:  # noqa: BLE001 (any error at all goes back to the test)
                    errors.append(_error(e))
            reply = {"errors": errors}
        elif op == "restore_until":
            reply = _restore_until(ckpt, command["idx"], fallbacks)
        else:
            reply = {"error": "UnknownCommand", "message": op}
        print(json.dumps(reply | {"seq": command["seq"]}), flush=True)


def _restore_until(ckpt: Any, last: int, fallbacks: _Fallbacks) -> dict[str, Any]:
    restores, empty, torn, errors, seen = 0, 0, 0, [], []
    deadline = time.monotonic() + RESTORE_DEADLINE_S
    before = fallbacks.count
    while time.monotonic() < deadline:
        vc = _collection(-1.0, -1)
        try:
            idx, _ = ckpt.restore(vc)
        except Exception as e:  # noqa: BLE001 (any error at all goes back to the test)
            errors.append(_error(e))
            continue
        if idx == 0:
            empty += 1
            continue
        restores += 1
        seen.append(idx)
        if describe_restored(vc) != (float(idx), 0):
            torn += 1
        if idx >= last:
            break
    return {
        "restores": restores,
        "empty": empty,
        "torn": torn,
        "errors": errors,
        "fallbacks": fallbacks.count - before,
        "distinct": len(set(seen)),
        "finished": bool(seen) and seen[-1] >= last,
    }


# -- the driving side, used by the tests ---------------------------------------------------------


class Worker:
    """One worker process, started and waited for; ``send`` a command, then ``reply``.

    A worker serves any number of folders (each command names its ``logdir`` and ``keep``), so the
    tests start two per module and not two per test: each start imports JAX.
    """

    def __init__(self, log: Path) -> None:
        self._log = open(log, "wb")
        self._seq = 0
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(os.environ),
        )
        assert self._line(timeout=120) == "ready", f"worker did not start; see {log}"

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self._seq += 1
        self.process.stdin.write(json.dumps(command | {"seq": self._seq}).encode() + b"\n")
        self.process.stdin.flush()

    def reply(self, timeout: float = 600) -> dict[str, Any]:
        """The answer to the last command (answers to earlier ones, left by a failed test, are skipped)."""
        while True:
            answer = dict(json.loads(self._line(timeout)))
            if answer.pop("seq") == self._seq:
                return answer

    def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"worker {self.process.pid} gave no answer within {timeout} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.process.pid} exited ({self.process.wait()}); see {self._log.name}")
        return line.decode().strip()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(op="quit")
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self._log.close()


def started_workers(logs: Path) -> Iterator[list[Worker]]:
    """Two workers, logging to ``logs``, closed when this generator ends (the body of a pytest fixture)."""
    started: list[Worker] = []
    try:
        for who in (0, 1):
            started.append(Worker(logs / f"worker{who}.log"))
        yield started
    finally:
        for worker in started:
            worker.close()


def race_on_one_index(workers: list[Worker], logdir: str, rounds: int) -> dict[str, int]:
    """Two workers save the same index at the same moment, ``rounds`` times: exactly one wins each time,
    the other gets ObjectExistsError, and the checkpoint is the winner's, whole."""
    import objio

    wins = [0, 0]
    for idx in range(1, rounds + 1):
        for who, worker in enumerate(workers):
            worker.send(op="save", logdir=logdir, keep=2, idx=idx, who=who)
        replies = [worker.reply() for worker in workers]
        winners = [who for who, r in enumerate(replies) if r.get("ok")]
        assert len(winners) == 1, f"round {idx}: {replies}"
        loser = replies[1 - winners[0]]
        assert loser["error"] == "ObjectExistsError", f"round {idx}: {replies}"
        wins[winners[0]] += 1
        vc = _collection(-1.0, -1)
        objio.Checkpoint(logdir, keep_ckpts=2).restore(vc, idx)
        assert describe_restored(vc) == (float(idx), winners[0]), f"round {idx}"
    return {"rounds": rounds, "wins_0": wins[0], "wins_1": wins[1]}


def race_on_neighbouring_indices(workers: list[Worker], logdir: str, rounds: int, *, zombie: bool) -> dict[str, int]:
    """Two workers with ``keep_ckpts=1`` save different indices at the same moment, ``rounds`` times.

    Side by side (``zombie=False``) they save 2r and 2r+1, the higher one alternating between them;
    with ``zombie=True`` one saves 1000+r (the new job) and the other r (a zombie behind it). The
    newest index must survive every round, whole, and older rounds must be gone.
    """
    import objio

    leftovers = 0
    ckpt = objio.Checkpoint(logdir, keep_ckpts=1, verbose=False)
    for r in range(1, rounds + 1):
        pair = (1000 + r, r) if zombie else ((2 * r, 2 * r + 1) if r % 2 else (2 * r + 1, 2 * r))
        for who, worker in enumerate(workers):
            worker.send(op="save", logdir=logdir, keep=1, idx=pair[who], who=who)
        replies = [worker.reply() for worker in workers]
        assert all(reply.get("ok") for reply in replies), f"round {r}: {replies}"
        indices = ckpt.indices()
        newest = max(pair)
        assert newest in indices and set(indices) <= set(pair), f"round {r}: {indices}"
        leftovers += len(indices) - 1
        vc = _collection(-1.0, -1)
        assert ckpt.restore(vc)[0] == newest
        assert describe_restored(vc) == (float(newest), pair.index(newest))
    return {"rounds": rounds, "older_left_until_next_save": leftovers}


def restore_racing_retention(workers: list[Worker], logdir: str, saves: int) -> dict[str, int]:
    """One worker saves 1 ... ``saves`` with ``keep_ckpts=2`` while another restores the latest until it
    restores the last one: no restore may fail or come back torn."""
    saver, restorer = workers
    restorer.send(op="restore_until", logdir=logdir, keep=2, idx=saves)
    saver.send(op="saves", logdir=logdir, keep=2, first=1, last=saves)
    saved, restored = saver.reply(), restorer.reply()
    assert saved["errors"] == []
    assert restored["errors"] == [], restored["errors"][:3]
    assert restored["torn"] == 0 and restored["finished"], restored
    return {k: v for k, v in restored.items() if isinstance(v, int) and not isinstance(v, bool)}


if __name__ == "__main__":
    _serve()
