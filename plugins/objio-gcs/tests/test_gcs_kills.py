"""Checkpoint saves on GCS (fake-gcs-server) SIGKILLed at chosen points and at random moments.

The harness is :func:`objio.testing.kill_checkpoint_saves`, shared with the S3 plugin: after each
kill the earlier checkpoint restores bit-exact, nothing partial is listed, and ``indices()`` is
unchanged or holds the new complete checkpoint. A killed writer's resumable session cannot be
listed by anyone (the JSON API has no such call), so ``cleanup`` finds nothing of it; it is
invisible, and GCS drops it after a week.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from objio.testing import KILL_POINTS, kill_checkpoint_saves

CHUNK = 256 << 10  # GCS's chunk granularity, the smallest chunk
PRELOAD = ["objio_gcs.storage"]
OPTIONS = {"chunk_size": CHUNK}


def test_saves_killed_at_chosen_points_publish_nothing(gcs_url: str, fault_log: Callable[..., None]) -> None:
    # Two full chunks and a tail: the writer sends chunk 2 before it finalises.
    killed = kill_checkpoint_saves(gcs_url, OPTIONS, points=list(KILL_POINTS), nbytes=2 * CHUNK + 4096, preload=PRELOAD)
    assert [k.point for k in killed] == list(KILL_POINTS)
    for k in killed:
        assert k.new == [] and k.saved == [] and k.aborted == 0, k
        fault_log(fault="gcs-killed-save-point", point=k.point, trials=1)


def test_saves_killed_at_random_moments_leave_only_complete_checkpoints(
    gcs_url: str, fault_trials: Callable[[int, int], int], fault_log: Callable[..., None]
) -> None:
    trials = fault_trials(6, 50)
    points: list[Any] = [None] * trials
    # Four chunks per save, two saves per writer: a kill lands before, in or between uploads.
    killed = kill_checkpoint_saves(
        gcs_url,
        OPTIONS,
        points=points,
        nbytes=4 * CHUNK,
        seed=os.environ.get("OBJIO_FAULT_SEED", "8"),
        preload=PRELOAD,
    )
    assert len(killed) == trials and all(k.aborted == 0 for k in killed)
    outcomes: Counter[str] = Counter()
    for k in killed:
        outcomes["checkpoints committed"] += len(k.new)
        outcomes["commits landed after the writer died"] += len(k.late)
        outcomes["killed with nothing committed"] += not k.new
    fault_log(fault="gcs-killed-save-random", trials=trials, **outcomes)
