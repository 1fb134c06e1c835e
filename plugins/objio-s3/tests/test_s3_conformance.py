"""The S3 backend runs objio's whole conformance suite against a real moto_server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from objio.testing import StorageConformance

PART_SIZE = 5 << 20  # S3's smallest part: the suite's larger objects then go up as multipart uploads


class TestS3Conformance(StorageConformance):
    # Above the part size, so the killed writer dies with a multipart upload under way, and the
    # streaming and exception tests cross several parts.
    killed_writer_bytes = 12 << 20
    large_object_bytes = 12 << 20
    racers = 8

    @pytest.fixture
    def storage_url(self, bucket: str) -> str:
        # Endpoint and credentials come from the environment (AWS_ENDPOINT_URL ...), as for users;
        # the killed writer's process inherits them.
        return f"s3://{bucket}/run"

    @pytest.fixture
    def storage_options(self) -> dict[str, Any]:
        return {"part_size": PART_SIZE, "max_in_flight": 2}

    @pytest.fixture(autouse=True)
    def _no_upload_left_behind(
        self, request: pytest.FixtureRequest, bucket: str, no_pending_uploads: Callable[[str], list[str]]
    ) -> Iterator[None]:
        """After every test no multipart upload may be left open in the bucket, but the SIGKILLed one.

        That one must be there: it shows the writer died in mid-upload (its object still never
        appeared). Only a bucket lifecycle rule can clear it, as on S3.
        """
        yield
        if request.node.originalname == "test_killed_writer_process_publishes_nothing":
            assert no_pending_uploads(bucket) == ["run/ckpt/obj"]
        else:
            assert no_pending_uploads(bucket) == []
