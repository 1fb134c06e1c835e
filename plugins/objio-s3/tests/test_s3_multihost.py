"""Multi-process checkpoints on S3 (moto): the jobs and checks of tests/test_multihost.py, on a bucket.

The worker processes inherit this session's environment, which points the AWS chain at moto on
127.0.0.1 (conftest.py), so every part, commit and range read of the jobs goes to the moto server.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from objio.testing import load_module

_HARNESS = Path(__file__).resolve().parents[3] / "tests" / "test_multihost.py"
harness = load_module(_HARNESS, "objio_multihost_harness")


@pytest.fixture(scope="module")
def jobs(s3_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    bucket = f"objio-multihost-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=bucket)
    return harness.start_jobs(tmp_path_factory.mktemp("s3-multihost"), f"s3://{bucket}/run")


def test_save_writes_each_unique_shard_once(jobs: Any) -> None:
    harness.check_save_writes_each_unique_shard_once(jobs)


def test_restores_on_every_topology(jobs: Any) -> None:
    harness.check_restore_on_the_same_topology(jobs)  # with range reads: less than the whole checkpoint
    for process in range(4):
        harness._assert_restored(jobs.step(jobs.b, process, 0, "b"))
        harness._assert_restored(jobs.step(jobs.b, process, 2, "b"))
    harness._assert_restored(jobs.step(jobs.c, 0, 0, "c"))
    harness._assert_restored(jobs.step(jobs.c, 0, 1, "c"))
    harness._assert_restored(jobs.step(jobs.c, 0, 2, "c"))  # a single-file checkpoint onto 4 devices
    harness.check_restore_in_a_plain_process(jobs)


def test_create_only_conflict_fails_in_every_process(jobs: Any) -> None:
    harness.check_create_only_conflict(jobs)


def test_a_process_that_raises_fails_the_save_everywhere(jobs: Any) -> None:
    harness.check_a_process_that_raises(jobs)


def test_a_killed_process_leaves_nothing_visible(jobs: Any) -> None:
    harness.check_a_killed_process(jobs)


def test_a_retry_removes_the_parts_a_failed_save_left(jobs: Any) -> None:
    harness.check_retry_removes_leftover_parts(jobs)


def test_no_multipart_upload_is_left_open(jobs: Any, no_pending_uploads: Any) -> None:
    assert no_pending_uploads(jobs.url.split("/")[2]) == []
