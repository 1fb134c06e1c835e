"""The GCS backend runs objio's whole conformance suite against fake-gcs-server, twice.

Once as users meet it (no options: ``STORAGE_EMULATOR_HOST`` and the default 64 MiB chunk, so the
suite's objects go up in single requests), and once with the smallest chunk GCS allows (256 KiB),
so that the same promises are checked on the resumable path: the large object streams in a dozen
chunks, the exception and the SIGKILL arrive with a session open, the dropped writer is cancelled,
and the writers racing in threads commit resumable sessions (a known gap of the emulator).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from objio.testing import StorageConformance


class TestGCSConformance(StorageConformance):
    @pytest.fixture
    def storage_url(self, gcs_url: str) -> str:
        return gcs_url


class TestGCSResumableConformance(StorageConformance):
    #: Four chunks of 256 KiB are up when the writer process is killed.
    killed_writer_bytes = (1 << 20) + 1
    #: The writers racing in threads commit resumable sessions (the single-request race is in the class above).
    racer_bytes = 1 << 20
    known_gaps: ClassVar[dict[str, str]] = {
        "test_create_only_racing_writers_have_one_winner": "fake-gcs-server v1.54 ignores ifGenerationMatch on "
        "resumable uploads, so every racer 'wins' there; real GCS checks it when the upload finalises and answers "
        "412 to all but one",
    }

    @pytest.fixture
    def storage_url(self, gcs_url: str) -> str:
        return gcs_url

    @pytest.fixture
    def storage_options(self) -> dict[str, Any]:
        return {"chunk_size": 256 * 1024}
