"""Checkpoint in multi-process jobs on S3 (moto): the jobs and tests of tests/test_multihost_checkpoint.py, on a bucket.

The worker processes inherit this session's environment, which points the AWS chain at moto on
127.0.0.1 (conftest.py), so every part, commit, listing, deletion and range read goes to the moto server.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from objio.testing import load_module

_TESTS = Path(__file__).resolve().parents[3] / "tests" / "test_multihost_checkpoint.py"
tests = load_module(_TESTS, "objio_multihost_checkpoint_tests")


@pytest.fixture(scope="module")
def jobs(s3_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    bucket = f"objio-multihost-ckpt-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    return tests.Jobs(tmp_path_factory.mktemp("s3-multihost-checkpoint"), f"s3://{bucket}/run")


def test_every_process_saves_and_restores(jobs: Any) -> None:
    tests.test_every_process_saves_and_restores_a_var_collection(jobs)
    tests.test_every_process_saves_and_restores_a_pytree(jobs)


def test_retention_across_processes_deletes_the_parts_too(jobs: Any) -> None:
    tests.test_retention_across_processes_deletes_the_parts_too(jobs)


def test_a_killed_process_leaves_nothing_visible_and_the_next_job_restores(jobs: Any) -> None:
    tests.test_a_killed_process_leaves_nothing_visible_and_the_next_job_restores(jobs)
    tests.test_the_next_save_removes_what_the_failed_save_left(jobs)


def test_restore_in_a_plain_process(jobs: Any) -> None:
    tests.test_restore_in_a_plain_process(jobs)


def test_every_process_restores_a_single_file_checkpoint(jobs: Any) -> None:
    tests.test_every_process_restores_a_single_file_checkpoint(jobs)


def test_no_multipart_upload_is_left_open(jobs: Any, no_pending_uploads: Any) -> None:
    assert no_pending_uploads(jobs.url.split("/")[2]) == []
