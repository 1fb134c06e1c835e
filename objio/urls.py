"""URLs and paths as objio reads them: schemes, keys, file URLs, and what to install for a scheme.

One leaf module (it imports nothing from objio but :mod:`objio.errors`) that the core, the built-in
backends and every plugin share, so a URL means the same thing everywhere (issue 7, item 6).

>>> from objio import urls
>>> urls.scheme_of("S3://bucket/run"), urls.scheme_of("/data/run"), urls.scheme_of("C:/data")
('s3', '', '')
>>> urls.split_location("s3://bucket/run/model.npz")
('s3://bucket/run', 'model.npz')
>>> urls.join_url("s3://bucket/run/", "ckpt/0000000001.npz")
's3://bucket/run/ckpt/0000000001.npz'
>>> urls.local_path("file:///data/my%20run")
'/data/my run'
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from objio.errors import BackendNotFoundError

__all__ = [
    "DISTRIBUTION_FOR_SCHEME",
    "check_url",
    "install_hint",
    "join_url",
    "local_path",
    "scheme_of",
    "schemes_served_by",
    "split_location",
]

#: Schemes served by objio's own plugin distributions, so an error can name what to install.
DISTRIBUTION_FOR_SCHEME: dict[str, str] = {
    "s3": "objio-s3",
    "s3a": "objio-s3",
    "gs": "objio-gcs",
    "gcs": "objio-gcs",
}


def schemes_served_by(distribution: str) -> tuple[str, ...]:
    """The schemes :data:`DISTRIBUTION_FOR_SCHEME` assigns to one of objio's own plugins, sorted."""
    return tuple(sorted(s for s, d in DISTRIBUTION_FOR_SCHEME.items() if d == distribution))


def _one_slash_scheme(url: str) -> str | None:
    """The scheme of ``"s3:/bucket/x"``: two letters or more (so that Windows drive letters, ``"C:/data"``,
    stay local paths), a colon, one slash, then something else; ``None`` for anything else.

    Plain string tests, not a regular expression: compiling one was a tenth of a millisecond of every
    first save (issue 10).
    """
    scheme, sep, rest = url.partition(":/")
    if not sep or len(scheme) < 2 or rest.startswith("/") or not (scheme.isascii() and scheme[0].isalpha()):
        return None
    return scheme if all(c.isalnum() or c in "+.-" for c in scheme) else None


def scheme_of(url: str) -> str:
    """The URL scheme in lower case, or ``""`` for a local path (Windows drive letters included)."""
    if "://" not in url:
        return ""
    scheme = urlsplit(url).scheme.lower()
    return "" if len(scheme) == 1 else scheme


def check_url(url: str) -> str:
    """Return ``url`` unchanged, or raise if it is a URL with one slash after the scheme.

    ``"s3:/bucket/x"`` would otherwise be a relative local path, and a save would quietly create a
    folder named ``s3:``.

    :raises BackendNotFoundError: for such a URL; the message shows the fix.
    """
    scheme = _one_slash_scheme(url)
    if scheme is not None:
        fixed = f"{scheme}://{url[len(scheme) + 2 :]}"
        raise BackendNotFoundError(
            f"{url!r} looks like a {scheme.lower()} URL with one slash after '{scheme}:'; write {fixed!r}, "
            f"or './{url}' if you mean a local folder named '{scheme}:'"
        )
    return url


def join_url(root: str, key: str) -> str:
    """``root`` and ``key`` joined with one ``/``, for messages and for returned paths."""
    if not root or root == ".":
        return key
    return root.rstrip("/") + "/" + key if key else root


def split_location(location: str) -> tuple[str, str]:
    """Split a file's path or URL into the root of its folder's storage and the object's key.

    The folder is what a backend's ``objio_storage`` hook receives for a file the user names. A
    ``file://`` URL's name is percent-decoded like its folder is, by :func:`local_path`.

    :raises ValueError: ``location`` names a folder, not a file.
    """
    head, sep, key = check_url(location).rpartition("/")
    if not key:
        raise ValueError(
            f"{location!r} names a folder; give the file name too, such as {location.rstrip('/')}/model.npz"
        )
    if not sep:
        head = "."
    elif not head or head.endswith((":/", "://")):  # "/model.npz", "file:///model.npz", "s3://model.npz"
        head += "/"
    if scheme_of(location) == "file":
        key = unquote(key)
        if "/" in key:
            raise ValueError(f"the file name of {location!r} decodes to {key!r}, which holds a '/'")
    return head, key


def local_path(url: str) -> str:
    """The local path of a ``file://`` URL, percent-decoded; a plain path is returned as it is.

    :raises BackendNotFoundError: the URL names another host (only ``file:///path`` and
        ``file://localhost/path`` are local).
    """
    if scheme_of(url) != "file":
        return url
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise BackendNotFoundError(
            f"{url!r} names the host {parts.netloc!r}; objio reads only local file URLs "
            f"(file:///path or file://localhost/path)"
        )
    return unquote(parts.path) or "/"


def install_hint(scheme: str) -> str | None:
    """The command that installs the backend of one of objio's own schemes, or ``None``.

    From a source checkout of objio (a ``plugins/`` folder beside the package) it names the plugin's
    folder, since the plugins are not on the package index there; otherwise the published name.
    """
    dist = DISTRIBUTION_FOR_SCHEME.get(scheme.lower())
    if dist is None:
        return None
    folder = _checkout_root() / "plugins" / dist
    if (folder / "pyproject.toml").is_file():
        return f"pip install -e {_shell_path(folder)}"
    return f"pip install {dist}"


def _checkout_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _shell_path(path: Path) -> str:
    text = os.fspath(path)
    import re  # only for this message: compiling a pattern at import costs every first save (issue 10)

    return f"'{text}'" if re.search(r"[^\w@%+=:,./-]", text) else text
