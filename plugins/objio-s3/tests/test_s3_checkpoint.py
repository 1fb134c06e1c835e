"""objio's Checkpoint on s3:// end to end, and files that plain boto3 and np.load read back."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio.errors import NoCheckpointWarning, ObjectExistsError


def _model(fill: float, floats: int = 1000) -> objio.VarCollection:
    return objio.VarCollection(
        {
            "(Net).w": objio.TrainVar(jnp.full((floats,), fill, jnp.float32)),
            "(Net).b": objio.TrainVar(jnp.full((7,), fill, jnp.float32)),
            "(Net).steps": objio.StateVar(jnp.full((), fill, jnp.int32)),
        }
    )


def _get(client: Any, bucket: str, key: str) -> bytes:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    try:
        return bytes(body.read())
    finally:
        body.close()


def test_checkpoint_with_retention(bucket: str, s3_client: Any) -> None:
    ckpt = objio.Checkpoint(f"s3://{bucket}/run", keep_ckpts=3)
    with pytest.warns(NoCheckpointWarning):
        assert ckpt.restore(_model(0.0)) == (0, "")  # a fresh run: nothing to restore yet
    for idx in range(1, 6):
        ckpt.save(_model(float(idx)), idx)
    keys = [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["run/ckpt/0000000003.npz", "run/ckpt/0000000004.npz", "run/ckpt/0000000005.npz"]
    with pytest.raises(ObjectExistsError):
        ckpt.save(_model(9.0), 5)  # a zombie writer for the same index never clobbers it
    restored = _model(0.0)
    assert ckpt.restore(restored) == (5, f"s3://{bucket}/run/ckpt/0000000005.npz")
    assert float(restored["(Net).w"].value[0]) == 5.0
    assert ckpt.restore(restored, idx=3)[0] == 3 and int(restored["(Net).steps"].value) == 3
    # A resumed job (a new Checkpoint object, as after a preemption) sees the same state.
    assert objio.Checkpoint(f"s3://{bucket}/run", keep_ckpts=3).restore(_model(0.0))[0] == 5


@pytest.mark.parametrize("floats", [1000, 3 << 20], ids=["put-object", "multipart"])
def test_what_objio_writes_reads_back_with_boto3_and_np_load(bucket: str, s3_client: Any, floats: int) -> None:
    vc = _model(2.5, floats)
    # 12 MiB of weights with 5 MiB parts: a multipart object; 4 kB: a single PutObject.
    objio.save_var_collection(f"s3://{bucket}/run/model.npz", vc, storage_options={"part_size": 5 << 20})
    data = _get(s3_client, bucket, "run/model.npz")
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    with np.load(io.BytesIO(data)) as npz:
        names = list(npz["names"])
        assert sorted(names) == sorted(vc.keys())
        for i, name in enumerate(names):
            np.testing.assert_array_equal(npz[str(i)], np.asarray(vc[name].value))
