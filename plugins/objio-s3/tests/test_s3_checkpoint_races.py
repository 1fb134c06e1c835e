"""Racing jobs on one checkpoint folder in a bucket (moto_server), as separate processes (issue 8).

The scenarios of tests/test_checkpoint_races.py, on ``s3://``: two processes save one index at once
(create-only: exactly one wins), save neighbouring indices with ``keep_ckpts=1`` (the newest always
survives), and one restores while another saves with ``keep_ckpts=2`` (no restore fails; on S3 a
checkpoint deleted mid-read must surface as ObjectNotFoundError, never as a corrupt file). The worker
processes inherit the fixture's environment, so they talk to the same moto_server on 127.0.0.1.
``OBJIO_LONG_FAULTS=1`` runs many more rounds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from objio.testing import load_module

LONG = os.environ.get("OBJIO_LONG_FAULTS") == "1"
ROUNDS = 60 if LONG else 6
SAVES = 150 if LONG else 20


_WORKER = Path(__file__).resolve().parents[3] / "tests" / "checkpoint_race_worker.py"
races = load_module(_WORKER, "checkpoint_race_worker")


@pytest.fixture(scope="module")
def workers(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Any]]:
    """Two worker processes for this module's tests (each start imports JAX: start them once)."""
    yield from races.started_workers(tmp_path_factory.mktemp("race-workers"))


def test_two_processes_saving_one_index_have_exactly_one_winner(workers: list[Any], bucket: str) -> None:
    stats = races.race_on_one_index(workers, f"s3://{bucket}/run", ROUNDS)
    assert stats["wins_0"] + stats["wins_1"] == ROUNDS
    print(stats)


@pytest.mark.parametrize("zombie", [False, True], ids=["side-by-side", "zombie"])
def test_two_processes_saving_neighbouring_indices_always_leave_the_newest(
    workers: list[Any], bucket: str, zombie: bool
) -> None:
    print(races.race_on_neighbouring_indices(workers, f"s3://{bucket}/run", ROUNDS, zombie=zombie))


def test_restore_racing_retention_never_fails(workers: list[Any], bucket: str) -> None:
    stats = races.restore_racing_retention(workers, f"s3://{bucket}/run", SAVES)
    assert stats["restores"] > 0
    print(stats)
