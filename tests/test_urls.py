"""objio.urls: schemes, file URLs, keys, install hints, and the URL errors users meet first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import objio
from objio import urls
from objio.errors import BackendNotFoundError


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("s3://bucket/run", "s3"),
        ("GS://bucket", "gs"),
        ("file:///data", "file"),
        ("/data/run", ""),
        ("run/a", ""),
        ("C://data", ""),  # a Windows drive letter is a path
        ("memory://x", "memory"),
    ],
)
def test_scheme_of(url: str, scheme: str) -> None:
    assert urls.scheme_of(url) == scheme


@pytest.mark.parametrize(
    ("location", "root", "key"),
    [
        ("model.npz", ".", "model.npz"),
        ("/model.npz", "/", "model.npz"),
        ("runs/a/model.npz", "runs/a", "model.npz"),
        ("s3://bucket/run/model.npz", "s3://bucket/run", "model.npz"),
        ("file:///data/run/model.npz", "file:///data/run", "model.npz"),
        # the name of a file URL is decoded like its folder, so both reach the disk the same way
        ("file:///data/my%20run/my%20model.npz", "file:///data/my%20run", "my model.npz"),
        # other schemes keep their keys as written: '%' is a legal character of an object name
        ("s3://bucket/a%20b.npz", "s3://bucket", "a%20b.npz"),
    ],
)
def test_split_location(location: str, root: str, key: str) -> None:
    assert urls.split_location(location) == (root, key)


def test_split_location_refuses_a_folder_and_a_name_that_decodes_to_a_folder() -> None:
    with pytest.raises(ValueError, match="names a folder; give the file name too, such as s3://b/run/model.npz"):
        urls.split_location("s3://b/run/")
    with pytest.raises(ValueError, match="decodes to 'a/b.npz', which holds a '/'"):
        urls.split_location("file:///data/a%2Fb.npz")


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("file:///data/run", "/data/run"),
        ("file://localhost/data/run", "/data/run"),
        ("file:///data/my%20run%25", "/data/my run%"),
        ("file:///", "/"),
        ("/plain/path%20", "/plain/path%20"),  # a path is not a URL: never decoded
    ],
)
def test_local_path(url: str, path: str) -> None:
    assert urls.local_path(url) == path


def test_a_file_url_on_another_host_is_refused() -> None:
    with pytest.raises(BackendNotFoundError, match="names the host 'fileserver'; objio reads only local file URLs"):
        urls.local_path("file://fileserver/share/run")
    with pytest.raises(BackendNotFoundError, match="fileserver"):
        objio.open_storage("file://fileserver/share/run")


def test_a_percent_encoded_file_url_saves_where_its_path_says(tmp_path: Path) -> None:
    import jax.numpy as jnp

    folder = tmp_path / "my run"
    vc = objio.VarCollection({"w": objio.TrainVar(jnp.arange(3.0))})
    objio.save_var_collection((folder / "my model.npz").as_uri(), vc)
    assert sorted(p.name for p in folder.iterdir()) == ["my model.npz"]
    objio.load_var_collection(str(folder / "my model.npz"), vc)


@pytest.mark.parametrize(
    ("root", "key", "joined"), [("s3://b/run/", "k", "s3://b/run/k"), (".", "k", "k"), ("r", "", "r")]
)
def test_join_url(root: str, key: str, joined: str) -> None:
    assert urls.join_url(root, key) == joined


@pytest.mark.parametrize("url", ["s3:/bucket/net.npz", "gs:/bucket/run", "memory:/x/y"])
def test_a_url_with_one_slash_is_refused_with_the_fix(url: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    scheme, rest = url.split(":/", 1)
    with pytest.raises(BackendNotFoundError, match=f"write '{scheme}://{rest}'") as caught:
        objio.Checkpoint(url, keep_ckpts=1).save(objio.VarCollection(), 1)
    assert "one slash" in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # no local folder named 's3:' appeared


def test_a_windows_drive_letter_is_not_a_url_with_one_slash() -> None:
    assert urls.check_url("C:/data/run") == "C:/data/run"


def test_the_install_hint_names_the_plugin_folder_in_a_source_checkout() -> None:
    checkout = Path(objio.__file__).resolve().parent.parent
    assert (checkout / "plugins" / "objio-s3" / "pyproject.toml").is_file(), "these tests run from a checkout"
    assert urls.install_hint("s3") == f"pip install -e {checkout / 'plugins' / 'objio-s3'}"
    assert urls.install_hint("GS") == f"pip install -e {checkout / 'plugins' / 'objio-gcs'}"
    assert urls.install_hint("nosuch") is None


def test_the_install_hint_names_the_published_distribution_outside_a_checkout(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(urls, "_checkout_root", lambda: tmp_path)  # an installed objio: no plugins/ beside it
    assert urls.install_hint("s3a") == "pip install objio-s3"
    assert urls.install_hint("gcs") == "pip install objio-gcs"


def test_the_install_hint_quotes_a_folder_with_spaces(monkeypatch, tmp_path: Path) -> None:
    root = tmp_path / "my checkout"
    (root / "plugins" / "objio-s3").mkdir(parents=True)
    (root / "plugins" / "objio-s3" / "pyproject.toml").write_text("")
    monkeypatch.setattr(urls, "_checkout_root", lambda: root)
    assert urls.install_hint("s3") == f"pip install -e '{root / 'plugins' / 'objio-s3'}'"


@pytest.mark.parametrize(("url", "package"), [("az://c/run", "adlfs"), ("hf://datasets/x", "huggingface_hub")])
def test_an_fsspec_protocol_without_its_package_names_the_package(url: str, package: str) -> None:
    if package in sys.modules or _importable(package):
        pytest.skip(f"{package} is installed here")
    with pytest.raises(BackendNotFoundError, match=f"install it with `pip install {package}`") as caught:
        objio.open_storage(url)
    assert isinstance(caught.value.__cause__, ImportError)


def test_sftp_without_paramiko_names_paramiko() -> None:
    if _importable("paramiko"):
        pytest.skip("paramiko is installed here")
    with pytest.raises(BackendNotFoundError, match=r'requires "paramiko".*pip install paramiko'):
        objio.open_storage("sftp://127.0.0.1/run")


def test_ftp_with_no_server_is_storage_unavailable() -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(objio.StorageUnavailableError, match=f"could not connect to ftp://127.0.0.1:{port}/run"):
        objio.open_storage(f"ftp://127.0.0.1:{port}/run")


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
