"""Configuration: found through the ``objio`` entry point, configured by the AWS chain with no code
(environment, profile) or by explicit storage options, which win."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import objio
import objio_s3.plugin
from objio_s3 import S3Storage, Transfer


def _round_trip(url: str, options: dict[str, Any]) -> None:
    storage = objio.open_storage(url, options)
    with storage.open_writer("obj") as f:
        f.write(b"configured")
    with storage.open_reader("obj") as r:
        assert r.read() == b"configured"
    assert storage.list() == ["obj"]


@pytest.fixture
def no_env_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """No endpoint and no credentials in the environment: only explicit options can reach moto."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)


def test_the_entry_point_registers_the_plugin() -> None:
    pm = objio.get_plugin_manager()
    assert pm.get_plugin("s3") is objio_s3.plugin
    assert isinstance(objio.open_storage("s3://bucket/run", {}), S3Storage)
    assert isinstance(objio.open_storage("S3A://bucket", {}), S3Storage)
    assert objio_s3.plugin.objio_storage(url="gs://bucket/run", options={}) is None
    assert objio_s3.plugin.objio_storage(url="/local/s3/path", options={}) is None


def test_opening_other_storages_does_not_import_s3fs() -> None:
    # memory://, not a local path: local paths load no plugin at all (issue 10).
    code = (
        "import sys, objio; objio.open_storage('memory://other').list(); "
        "assert 'objio_s3.plugin' in sys.modules and 'objio_s3.storage' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_urls_and_keys(bucket: str) -> None:
    for url in (f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}/a/b/"):
        storage = objio.open_storage(url, {})
        assert storage.url == url
        _round_trip(url, {})
    assert objio.open_storage(f"s3://{bucket}", {}).list() == ["a/b/obj", "obj"]


def test_environment_alone_configures_everything(bucket: str, moto_endpoint: str) -> None:
    # The session's environment holds AWS_ENDPOINT_URL and the credentials; no option is given.
    storage = objio.open_storage(f"s3://{bucket}/run", {})
    assert isinstance(storage, S3Storage) and storage.fs.endpoint_url is None
    _round_trip(f"s3://{bucket}/run", {})


@pytest.mark.usefixtures("no_env_config")
@pytest.mark.parametrize("endpoint_option", ["endpoint_url", "endpoint"])
def test_explicit_endpoint_and_keys(bucket: str, moto_endpoint: str, endpoint_option: str) -> None:
    _round_trip(f"s3://{bucket}/run", {endpoint_option: moto_endpoint, "key": "testing", "secret": "testing"})


@pytest.mark.usefixtures("no_env_config")
def test_client_kwargs_pass_through(bucket: str, moto_endpoint: str) -> None:
    client_kwargs = {"endpoint_url": moto_endpoint, "aws_access_key_id": "k", "aws_secret_access_key": "s"}
    _round_trip(f"s3://{bucket}/run", {"client_kwargs": client_kwargs})


@pytest.mark.usefixtures("no_env_config")
def test_anonymous_access_to_a_public_bucket(bucket: str, moto_endpoint: str, s3_client: Any) -> None:
    owner = objio.open_storage(f"s3://{bucket}/run", {"endpoint_url": moto_endpoint, "key": "k", "secret": "s"})
    with owner.open_writer("obj") as f:
        f.write(b"public")
    s3_client.put_bucket_acl(Bucket=bucket, ACL="public-read")
    s3_client.put_object_acl(Bucket=bucket, Key="run/obj", ACL="public-read")
    anonymous = objio.open_storage(f"s3://{bucket}/run", {"anon": True, "endpoint_url": moto_endpoint})
    assert anonymous.list() == ["obj"]
    with anonymous.open_reader("obj") as r:
        assert r.read() == b"public"


@pytest.mark.usefixtures("no_env_config")
def test_a_profile_from_the_aws_config_file(
    bucket: str, moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    config.write_text(
        "[profile objio-test]\n"
        "aws_access_key_id = profile-key\n"
        "aws_secret_access_key = profile-secret\n"
        f"endpoint_url = {moto_endpoint}\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    _round_trip(f"s3://{bucket}/run", {"profile": "objio-test"})


def test_transfer_settings() -> None:
    storage = objio.open_storage("s3://bucket/run", {"part_size": 8 << 20, "max_in_flight": 3})
    assert isinstance(storage, S3Storage)
    assert storage.transfer == Transfer(part_size=8 << 20, max_in_flight=3)
    assert Transfer().part_size == 16 << 20  # default: 156 GiB per object at most
