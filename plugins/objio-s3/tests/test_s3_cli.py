"""The ``objio`` console script against S3 (moto_server on 127.0.0.1): a run in a bucket, seen, checked, copied."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import pytest

import objio

OBJIO = Path(sys.executable).with_name("objio")


def objio_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # The moto fixture has put AWS_ENDPOINT_URL and test credentials in os.environ: the child inherits them.
    return subprocess.run([str(OBJIO), *map(str, args)], capture_output=True, text=True, timeout=300)


def _collection(scale: float) -> objio.VarCollection:
    return objio.VarCollection(
        {"w": objio.TrainVar(jnp.ones((64, 64)) * scale), "b": objio.TrainVar(jnp.zeros(64, jnp.bfloat16))}
    )


@pytest.fixture
def s3_run(bucket: str) -> str:
    """``s3://<bucket>/run`` with checkpoints 1, 2 and 3, each with its loss as metadata."""
    url = f"s3://{bucket}/run"
    ckpt = objio.Checkpoint(url, keep_ckpts=None)
    for idx in (1, 2, 3):
        ckpt.save(_collection(float(idx)), idx, metadata={"loss": 1.0 / idx})
    return url


def test_ls_inspect_verify_a_run_in_a_bucket(s3_run: str) -> None:
    listed = objio_cli("ls", s3_run)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == f"3 checkpoint(s) in {s3_run}/ckpt"
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"]
    assert all(line.rstrip().endswith("loss") for line in lines[2:])
    assert all(re.search(r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d ", line) for line in lines[2:])  # S3's LastModified

    latest = f"{s3_run}/ckpt/0000000003.npz"
    inspected = json.loads(objio_cli("inspect", latest, "--json").stdout)
    assert inspected["metadata"] == {"loss": 1.0 / 3}
    assert [(v["name"], v["shape"], v["dtype"]) for v in inspected["variables"]] == [
        ("w", [64, 64], "float32"),
        ("b", [64], "bfloat16"),
    ]
    verified = objio_cli("verify", f"{s3_run}/ckpt/0000000001.npz", latest)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert [line.split()[1] for line in verified.stdout.splitlines()[1:]] == ["ok", "ok"]


def test_cp_from_the_bucket_to_disk_with_a_bar_and_back_create_only(
    s3_run: str, tmp_path: Path, s3_client: Any
) -> None:
    latest = f"{s3_run}/ckpt/0000000003.npz"
    local = tmp_path / "model.npz"
    copied = objio_cli("cp", latest, local, "--progress")
    assert copied.returncode == 0, copied.stderr
    assert "copying" in copied.stderr
    bucket = s3_run.split("/")[2]
    remote = s3_client.get_object(Bucket=bucket, Key="run/ckpt/0000000003.npz")["Body"].read()
    assert local.read_bytes() == remote

    refused = objio_cli("cp", local, f"{s3_run}/ckpt/0000000001.npz")
    assert refused.returncode == 1 and "--overwrite" in refused.stderr and "Traceback" not in refused.stderr
    first = s3_client.get_object(Bucket=bucket, Key="run/ckpt/0000000001.npz")["Body"].read()
    assert first != remote  # untouched
    assert objio_cli("diff", latest, local).returncode == 0
    differs = objio_cli("diff", f"{s3_run}/ckpt/0000000001.npz", local, "--json")
    assert differs.returncode == 1
    (difference,) = json.loads(differs.stdout)["differences"]
    assert (difference["name"], difference["kind"], difference["max_abs_diff"]) == ("w", "value", 2.0)


def test_cp_converts_inside_the_bucket(s3_run: str) -> None:
    pytest.importorskip("safetensors")
    converted = f"{s3_run}/export/model.safetensors"
    result = objio_cli("cp", f"{s3_run}/ckpt/0000000002.npz", converted)
    assert result.returncode == 0, result.stderr
    assert "(converted npz to safetensors)" in result.stdout
    assert objio_cli("diff", f"{s3_run}/ckpt/0000000002.npz", converted).returncode == 0


def test_gc_keep_deletes_older_checkpoints_in_the_bucket(s3_run: str) -> None:
    result = objio_cli("gc", s3_run, "--keep", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["checkpoints_deleted"] == [1, 2]
    assert objio.Checkpoint(s3_run, keep_ckpts=None).indices() == [3]


def test_a_missing_bucket_object_is_one_line_and_exit_1(bucket: str) -> None:
    result = objio_cli("inspect", f"s3://{bucket}/nothing.npz")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("objio: error: ") and "nothing.npz" in result.stderr


# -- the README's walkthrough, replayed as written ----------------------------------------------------

REPO = Path(__file__).resolve().parents[3]

# The README's Python runs with Objax 1.8, in the Objax venv the interop tests use; objio (this checkout,
# with the S3 plugin) is put on its path, after the venv's own packages so Objax keeps its jax and numpy.
_OBJAX_PRELUDE = f"""
import site, sys
site.addsitedir({sysconfig.get_paths()["purelib"]!r})
sys.path[:0] = [{str(REPO)!r}, {str(REPO / "plugins" / "objio-s3")!r}]
"""


def _objax_python() -> str:
    configured = os.environ.get("OBJIO_OBJAX_PYTHON")
    candidate = Path(configured) if configured else REPO / ".objax-venv" / "bin" / "python"
    if not candidate.exists():
        pytest.skip("no Objax 1.8 environment: set OBJIO_OBJAX_PYTHON (tests/test_objax_interop.py builds one)")
    return str(candidate)


def _walkthrough() -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block between the README's walkthrough markers."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("<!-- walkthrough", 1)[1].split("<!-- /walkthrough -->", 1)[0]
    return [(lang, code) for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, flags=re.S)]


def test_readme_walkthrough_runs_as_written(bucket: str, tmp_path: Path) -> None:
    objax_python = _objax_python()
    blocks = [(lang, code.replace("my-bucket", bucket)) for lang, code in _walkthrough()]
    assert [lang for lang, _ in blocks] == ["python", "bash", "python"]
    (_, save), (_, shell), (_, load) = blocks
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}

    def python(code: str) -> str:
        child = subprocess.run(
            [objax_python, "-c", _OBJAX_PRELUDE + code], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert child.returncode == 0, child.stdout + child.stderr
        return child.stdout

    python(save)
    outputs = []
    for line in shell.strip().splitlines():
        assert line.startswith("objio ")
        result = subprocess.run(
            [str(OBJIO), *shlex.split(line)[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        outputs.append(result)
    listed, inspected, verified, copied = outputs
    assert listed.stdout.splitlines()[2].split()[0] == "1" and listed.stdout.rstrip().endswith("val_loss")
    assert 'metadata: {"val_loss": 0.42}' in inspected.stdout
    assert " ok " in verified.stdout.splitlines()[1]
    assert "copying" in copied.stderr and (tmp_path / "model.npz").is_file()

    # The load block continues the same session: it needs the model and optimizer, not a second save.
    definitions = "\n".join(line for line in save.splitlines() if "ckpt.save(" not in line)
    printed = python(definitions + "\n" + load)
    assert printed.strip() == "(2, 8) {'val_loss': 0.42}"
