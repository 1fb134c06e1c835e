"""Checkpoint saves on S3 (moto) SIGKILLed at chosen points and at random moments.

The harness is :func:`objio.testing.kill_checkpoint_saves`, shared with the GCS plugin: after each
kill the earlier checkpoint restores bit-exact, nothing partial is listed, and ``indices()`` is
unchanged or holds the new complete checkpoint. Here, S3's own promise on top: a killed writer's
multipart upload is stored until ``storage.cleanup(0)`` aborts it, and then none is left.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from objio.testing import KILL_POINTS, kill_checkpoint_saves

PART = 5 << 20  # S3's smallest part
PRELOAD = ["objio_s3.storage"]
OPTIONS = {"part_size": PART}


def _url(bucket: str) -> str:
    return f"s3://{bucket}/{uuid.uuid4().hex}"


def test_saves_killed_at_chosen_points_publish_nothing_and_their_uploads_get_aborted(
    bucket: str, no_pending_uploads: Callable[[str], list[str]], fault_log: Callable[..., None]
) -> None:
    # Two full parts and a tail: the writer sends part 2 before it commits.
    killed = kill_checkpoint_saves(
        _url(bucket), OPTIONS, points=list(KILL_POINTS), nbytes=2 * PART + 4096, preload=PRELOAD
    )
    assert [k.point for k in killed] == list(KILL_POINTS)
    for k in killed:
        assert k.new == [] and k.saved == [], k
        # A multipart upload exists from its start on; killed before it, the writer left nothing to abort.
        assert k.aborted == (0 if k.point == "before-upload-start" else 1), k
        fault_log(fault="s3-killed-save-point", point=k.point, trials=1, uploads_aborted_by_cleanup=k.aborted)
    assert no_pending_uploads(bucket) == []


def test_saves_killed_at_random_moments_leave_only_complete_checkpoints(
    bucket: str,
    no_pending_uploads: Callable[[str], list[str]],
    fault_trials: Callable[[int, int], int],
    fault_log: Callable[..., None],
) -> None:
    trials = fault_trials(4, 50)
    points: list[Any] = [None] * trials
    # One full part and a tail per save, two saves per writer: a kill lands before, in or between uploads.
    killed = kill_checkpoint_saves(
        _url(bucket),
        OPTIONS,
        points=points,
        nbytes=PART + 4096,
        seed=os.environ.get("OBJIO_FAULT_SEED", "8"),
        preload=PRELOAD,
    )
    assert len(killed) == trials
    assert all(k.aborted <= 1 for k in killed)  # one writer has at most one upload open
    assert no_pending_uploads(bucket) == []
    outcomes: Counter[str] = Counter()
    for k in killed:
        outcomes["checkpoints committed"] += len(k.new)
        outcomes["commits landed after the writer died"] += len(k.late)
        outcomes["uploads aborted by cleanup"] += k.aborted
        outcomes["killed with nothing committed"] += not k.new
    fault_log(fault="s3-killed-save-random", trials=trials, **outcomes)
