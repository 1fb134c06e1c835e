"""objio on ``gs://`` as a user meets it, and interoperability with Google's own client.

``Checkpoint(logdir='gs://bucket/run', keep_ckpts=3)`` with no options (the emulator comes from
``STORAGE_EMULATOR_HOST``, as it would for a user), and files that google-cloud-storage reads back
byte for byte, and that numpy opens as plain npz.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs_client

import objio

BUCKET = "objio-test"


@pytest.fixture
def client(gcs_endpoint: str) -> Any:
    """google-cloud-storage, anonymous, on the emulator."""
    return gcs_client.Client(
        project="objio-test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_endpoint}
    )


def _model(fill: float, size: int = 256) -> objio.VarCollection:
    return objio.VarCollection(
        {
            "(Net).w": objio.TrainVar(np.full((size, 64), fill, np.float32)),
            "(Net).b": objio.TrainVar(np.full((64,), fill, np.float32)),
            "(Net).steps": objio.StateVar(np.full((), int(fill), np.int32)),
        }
    )


def _values(vc: objio.VarCollection) -> set[float]:
    return {float(np.asarray(v.value).ravel()[0]) for v in vc.values()}


def test_checkpoint_on_gs_just_works_with_retention(gcs_url: str, client: Any) -> None:
    ckpt = objio.Checkpoint(logdir=gcs_url, keep_ckpts=3)
    for idx in (1, 2, 3, 9, 10):
        ckpt.save(_model(idx), idx)
    prefix = gcs_url.removeprefix(f"gs://{BUCKET}/")
    names = sorted(b.name for b in client.list_blobs(BUCKET, prefix=prefix + "/"))
    assert names == [f"{prefix}/ckpt/{i:010d}.npz" for i in (3, 9, 10)]

    restored = _model(0)
    assert ckpt.restore(restored) == (10, f"{gcs_url}/ckpt/0000000010.npz")
    assert _values(restored) == {10.0}
    with pytest.raises(objio.ObjectExistsError):
        ckpt.save(_model(99), 10)  # a zombie writer of the same index fails loudly
    assert ckpt.restore(restored, idx=9)[0] == 9 and _values(restored) == {9.0}

    # A new job (a fresh Checkpoint, as after a preemption) sees the same state.
    assert objio.Checkpoint(gcs_url, keep_ckpts=3).restore(_model(0))[0] == 10


def test_an_empty_logdir_restores_nothing(gcs_url: str) -> None:
    with pytest.warns(objio.NoCheckpointWarning):
        assert objio.Checkpoint(gcs_url, keep_ckpts=3).restore(_model(0)) == (0, "")


@pytest.mark.parametrize("options", [{}, {"chunk_size": 256 * 1024}], ids=["one request", "resumable"])
def test_google_cloud_storage_reads_what_objio_writes(gcs_url: str, client: Any, options: dict[str, Any]) -> None:
    url = f"{gcs_url}/model.npz"
    model = _model(3.5, size=4096)  # 1 MiB of weights: several chunks on the resumable path
    objio.save_var_collection(url, model, storage_options=options)

    blob = client.bucket(BUCKET).get_blob(url.removeprefix(f"gs://{BUCKET}/"))
    assert blob.content_type == "application/octet-stream"
    assert re.fullmatch(r"[0-9a-f]{32}", blob.metadata["objio-write-id"])  # what tells a lost commit answer
    data = blob.download_as_bytes()
    assert len(data) == blob.size == objio.open_storage(gcs_url).size("model.npz")
    with np.load(io.BytesIO(data)) as npz:  # a standard npz
        names = list(npz["names.npy" if "names.npy" in npz.files else "names"])
        arrays = {str(name): npz[str(i)] for i, name in enumerate(names)}
    for name, var in model.items():
        np.testing.assert_array_equal(arrays[name], np.asarray(var.value))


def test_each_write_stores_its_own_write_id(gcs_url: str, client: Any) -> None:
    storage = objio.open_storage(gcs_url, {"chunk_size": 256 * 1024})
    ids = []
    for data in (b"small", bytes(600 * 1024)):  # one request, then a resumable session
        with storage.open_writer("k") as writer:
            writer.write(data)
        ids.append(writer.write_id)
        blob = client.bucket(BUCKET).get_blob(f"{gcs_url.removeprefix(f'gs://{BUCKET}/')}/k")
        assert blob.metadata == {"objio-write-id": ids[-1]}
    assert ids[0] != ids[1]


def test_objio_reads_what_google_cloud_storage_writes(gcs_url: str, client: Any) -> None:
    buffer = io.BytesIO()
    model = _model(7.0)
    np.savez(
        buffer,
        names=np.array(list(model.keys())),
        **{str(i): np.asarray(v.value) for i, v in enumerate(model.values())},
    )
    prefix = gcs_url.removeprefix(f"gs://{BUCKET}/")
    client.bucket(BUCKET).blob(f"{prefix}/from-client.npz").upload_from_string(buffer.getvalue())

    assert objio.open_storage(gcs_url).list() == ["from-client.npz"]
    loaded = _model(0)
    objio.load_var_collection(f"{gcs_url}/from-client.npz", loaded)
    assert _values(loaded) == {7.0}
