"""Racing jobs on one checkpoint folder, as separate processes on local disk (issue 8).

Two processes save one index at once (exactly one wins), save neighbouring indices with retention
(the newest always survives, also when one is a zombie writing an older index), and one restores
while another saves with ``keep_ckpts=2`` (no restore fails). The processes start each step
together because each waits on its stdin for the command; nothing sleeps. ``OBJIO_LONG_FAULTS=1``
runs many more rounds. The same scenarios run on S3 in plugins/objio-s3/tests/test_s3_checkpoint_races.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objio.testing import load_module

LONG = os.environ.get("OBJIO_LONG_FAULTS") == "1"
ROUNDS = 200 if LONG else 12
SAVES = 400 if LONG else 40


races = load_module(Path(__file__).with_name("checkpoint_race_worker.py"), "checkpoint_race_worker")


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Two worker processes for this module's tests (each start imports JAX: start them once)."""
    yield from races.started_workers(tmp_path_factory.mktemp("race-workers"))


def test_two_processes_saving_one_index_have_exactly_one_winner(workers: list[Any], tmp_path: Path) -> None:
    stats = races.race_on_one_index(workers, str(tmp_path / "run"), ROUNDS)
    assert stats["wins_0"] + stats["wins_1"] == ROUNDS
    print(stats)


@pytest.mark.parametrize("zombie", [False, True], ids=["side-by-side", "zombie"])
def test_two_processes_saving_neighbouring_indices_always_leave_the_newest(
    workers: list[Any], tmp_path: Path, zombie: bool
) -> None:
    stats = races.race_on_neighbouring_indices(workers, str(tmp_path / "run"), ROUNDS, zombie=zombie)
    print(stats)


def test_restore_racing_retention_never_fails(workers: list[Any], tmp_path: Path) -> None:
    stats = races.restore_racing_retention(workers, str(tmp_path / "run"), SAVES)
    assert stats["restores"] > 0
    print(stats)
