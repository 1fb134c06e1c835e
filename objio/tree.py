"""save_tree and load_tree: any JAX pytree of arrays (Flax params, Equinox modules, nested dicts) to one file.

Each array leaf is stored under a name made from its key path, one segment per level, joined by
``/``: ``{'params': {'dense': {'kernel': w}}}`` gives ``params/dense/kernel``, and
``{'layers': [{'w': w}]}`` gives ``layers/0/w``. The rule, chosen so no two leaves ever get the same
name (and a name can be read back into its path):

- a list or tuple position (and the index of a pytree node without keys) is written in decimal: ``0``;
- a dict key or an attribute name (Equinox, dataclasses) is written as it is, except that ``~``
  becomes ``~0`` and ``/`` becomes ``~1`` (as in JSON Pointer, RFC 6901), and a key that would read
  as a position (all digits) or is empty gets the prefix ``~s``: the key ``"0"`` is ``~s0``;
- an ``int`` dict key is written ``~i`` then the number: ``{3: w}`` gives ``~i3``;
- a leaf at the root (the tree is one array) has the empty name.

Leaves that are arrays (``jax.Array``, ``numpy.ndarray``, numpy scalars) or Python numbers are
stored; other leaves (an Equinox module's activation function, a string) are not, and
:func:`load_tree` with ``like`` gives them back from ``like`` unchanged. Files are plain npz
(``np.load`` reads them) unless saved as safetensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal, TypeGuard

import numpy as np
from jax import tree_util

from objio.io._arrays import ArrayReader, open_arrays, read_arrays
from objio.io._duck import is_var_collection, is_variable
from objio.io._files import FileOrStr, describe, open_for_write, split_url
from objio.io.save_load import check_metadata, checked, raise_missing, to_devices
from objio.progress import Progress
from objio.storage import Storage, join_url

__all__ = ["leaf_names", "load_tree", "save_tree"]

Format = Literal["npz", "safetensors"]
_NUMBERS = (bool, int, float, complex)


def save_tree(
    file: FileOrStr,
    tree: Any,
    *,
    metadata: dict[str, Any] | None = None,
    format: Format | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: Progress = None,
) -> None:
    """Save the array leaves of ``tree`` to ``file``, each under the name of its key path (see the module doc).

    >>> import objio, jax.numpy as jnp
    >>> params = {'dense': {'kernel': jnp.ones((2, 3)), 'bias': jnp.zeros(3)}, 'layers': [jnp.ones(1)]}
    >>> objio.save_tree('memory://doc/tree.npz', params, metadata={'step': 10})
    >>> sorted(objio.load_tree('memory://doc/tree.npz'))
    ['dense', 'layers']

    :param file: a path, a URL or an open binary file (left open); a path or URL is written atomically.
    :param metadata: a JSON-serialisable dict stored in the file (:func:`objio.read_metadata` reads it).
    :param format: ``"npz"`` or ``"safetensors"``; by default safetensors if the name ends with
        ``.safetensors``, else npz.
    :param storage_options: options for the storage backend of a URL.
    :param progress: how to show the bytes written (see :mod:`objio.progress`).
    :raises TypeError: ``metadata`` is not JSON-serialisable, or ``tree`` holds variables (save those
        with :func:`objio.io.save_var_collection`); raised before anything is written.

    In a multi-process ``jax.distributed`` job, every process calls it with the same path or URL
    and the same tree: each writes only the shards it holds and ``file`` becomes the commit object
    of a multi-process checkpoint (:func:`objio.multihost.save_sharded`; npz only, no progress bar).
    """
    metadata = check_metadata(metadata)
    if is_var_collection(tree):
        raise TypeError(
            f"save_tree got a collection of variables for {describe(file)}; "
            f"save it with objio.io.save_var_collection (or pass a pytree of arrays)"
        )
    names, leaves = named_leaves(tree)
    # objio.multihost is imported only here and for multi-process files: it is most of the import
    # time of objio.tree, which a single-process save or load never needs (issue 10).
    from objio.multihost._probe import in_multi_process_job

    if _is_path(file) and in_multi_process_job():
        _save_sharded_tree(file, names, leaves, metadata, format, storage_options)
        return
    chosen = format or _format_of(file)
    total = sum(int(np.asarray(leaf).nbytes) if isinstance(leaf, _NUMBERS) else int(leaf.nbytes) for leaf in leaves)
    with open_for_write(file, storage_options, progress=progress, total=total, action="saved") as stream:
        if chosen == "safetensors":
            from objio.io.safetensors_io import write_safetensors

            write_safetensors(stream, names, leaves, where=describe(file), metadata=metadata)
        elif chosen == "npz":
            from objio._npz_write import write_npz  # here: a load_tree never needs the writer

            write_npz(stream, names, leaves, where=describe(file), metadata=metadata)
        else:
            raise ValueError(f"format must be 'npz' or 'safetensors', got {chosen!r}")


def _save_sharded_tree(
    file: str | os.PathLike[str],
    names: list[str],
    leaves: list[Any],
    metadata: dict[str, Any] | None,
    format: Format | None,
    storage_options: dict[str, Any] | None,
) -> None:
    """Every process of a multi-process job writes its own shards; the file becomes a commit object."""
    if (format or _format_of(file)) != "npz":
        raise ValueError(
            f"{describe(file)}: a multi-process job saves npz checkpoints (each process writes its own shards); "
            f"save as .npz, then convert a consolidated copy with objio.io.convert"
        )
    from objio.multihost import save_sharded

    storage, key = split_url(file, storage_options)
    # Replaced if it exists, as a single-process save_tree does (Checkpoint saves create-only).
    save_sharded(storage, key, dict(zip(names, leaves, strict=True)), if_absent=False, metadata=metadata)


def named_leaves(tree: Any) -> tuple[list[str], list[Any]]:
    """The stored leaves of ``tree`` and their names (see the module doc), in flattening order.

    :raises TypeError: a leaf is a variable, not an array.
    """
    names, leaves = [], []
    for path, leaf in tree_util.tree_flatten_with_path(tree)[0]:
        if is_variable(leaf):
            raise TypeError(
                f"save_tree: the leaf {leaf_name(path)!r} is a variable ({type(leaf).__name__}), not an array; "
                f"pass its .value, or save a collection with objio.io.save_var_collection"
            )
        if _is_stored(leaf):
            names.append(leaf_name(path))
            leaves.append(leaf)
    return names, leaves


def load_tree(
    file: FileOrStr,
    like: Any = None,
    *,
    mmap: bool = False,
    storage_options: dict[str, Any] | None = None,
    progress: Progress = None,
) -> Any:
    """Load a pytree from ``file`` (npz or safetensors, told by content).

    With ``like`` (a pytree of the same structure: arrays, ``jax.ShapeDtypeStruct``\\ s, numbers),
    the result has ``like``'s structure; each leaf takes its dtype (cast as
    :func:`objio.io.load_var_collection` does) and, for jax arrays and ``ShapeDtypeStruct``\\ s, its
    sharding. Only the arrays ``like`` needs are read. Without ``like``, the result is nested dicts
    rebuilt from the names (lists where the positions are 0, 1, ... n-1), holding numpy arrays.

    A multi-process checkpoint (its commit object's path or URL) loads the same way: each process
    reads only the bytes of the shards its devices need for ``like``'s shardings.

    With ``mmap=True`` (a local file only), every array leaf is a read-only NumPy array mapped from
    the file, read from disk only when touched, and jax leaves of ``like`` come back as such NumPy
    arrays too (not placed on a device; a leaf whose dtype differs from the file's is cast, in
    memory). The headers and sizes are checked, the CRC-32 is not: see :mod:`objio.io.mapped` for
    that and for what deleting or replacing the file does to the arrays.

    :param file: a path, a URL or an open seekable binary file (left open).
    :param like: the structure, dtypes and shardings wanted.
    :param mmap: map the arrays from a local file instead of reading them.
    :param storage_options: options for the storage backend of a URL.
    :param progress: how to show the bytes read (see :mod:`objio.progress`); ignored with ``mmap=True``.
    :raises MissingVariablesError: ``like`` has leaves the file lacks; the message lists the file's unused names.
    :raises ShapeMismatchError: a stored shape differs from the leaf's.
    :raises DtypeMismatchError: a stored dtype cannot be cast to the leaf's.
    :raises ValueError: ``mmap=True`` for a file that is not on local disk, or a multi-process checkpoint.
    """
    where = describe(file)
    if mmap:
        from objio.io.mapped import open_mapped

        with open_mapped(file, storage_options) as mapped:
            return _tree_from(mapped, like, where, place=False)
    with open_arrays(file, storage_options, progress=progress, action="loaded") as reader:
        if not _is_multihost(getattr(reader, "metadata", {})):
            return _tree_from(reader, like, where)
    if not _is_path(file):
        raise TypeError(
            f"{where} is the commit object of a multi-process checkpoint, whose arrays are in part files beside it: "
            f"pass its path or URL instead of an open file"
        )
    return load_sharded_tree(*split_url(file, storage_options), like)


def _tree_from(reader: ArrayReader, like: Any, where: str, *, place: bool = True) -> Any:
    """The tree of ``reader``'s arrays; with ``place=False``, jax leaves of ``like`` stay NumPy arrays."""
    if like is None:
        return _nested(dict(zip(reader.names, read_arrays(reader, list(range(len(reader.names)))), strict=True)), where)
    flat, treedef = tree_util.tree_flatten_with_path(like)
    wanted = {i: leaf_name(path) for i, (path, leaf) in enumerate(flat) if _is_stored(leaf) or _is_spec(leaf)}
    index_of = {name: i for i, name in enumerate(reader.names)}
    missing = [name for name in wanted.values() if name not in index_of]
    if missing:
        raise_missing(missing, sorted(set(index_of) - set(wanted.values())), where)
    stored = read_arrays(reader, [index_of[name] for name in wanted.values()])
    arrays = {
        i: checked(array, flat[i][1], name, where) for (i, name), array in zip(wanted.items(), stored, strict=True)
    }
    return tree_util.tree_unflatten(treedef, _like_leaves(arrays, [leaf for _, leaf in flat], place))


def load_sharded_tree(storage: Storage, key: str, like: Any) -> Any:
    """:func:`load_tree` of the multi-process checkpoint at ``key``: each jax leaf of ``like`` on its sharding.

    Each process reads only the bytes its devices need; leaves that are not jax arrays (and every
    leaf when ``like`` is ``None``) are read whole, as NumPy arrays.
    """
    from objio.multihost import load_manifest, load_sharded
    from objio.multihost._restore import check_shape, sharding_of

    where = join_url(storage.url, key)
    entries = {entry.name: entry for entry in load_manifest(storage, key).arrays}
    if like is None:
        return _nested(load_sharded(storage, key, dict.fromkeys(entries)), where)
    flat, treedef = tree_util.tree_flatten_with_path(like)
    wanted = {i: leaf_name(path) for i, (path, leaf) in enumerate(flat) if _is_stored(leaf) or _is_spec(leaf)}
    missing = [name for name in wanted.values() if name not in entries]
    if missing:
        raise_missing(missing, sorted(set(entries) - set(wanted.values())), where)
    for i, name in wanted.items():
        check_shape(entries[name], flat[i][1], where)
    loaded = load_sharded(storage, key, {name: sharding_of(flat[i][1]) for i, name in wanted.items()})
    arrays = {i: checked(loaded[name], flat[i][1], name, where) for i, name in wanted.items()}
    return tree_util.tree_unflatten(treedef, _like_leaves(arrays, [leaf for _, leaf in flat]))


def _is_multihost(metadata: dict[str, Any]) -> bool:
    """Whether ``metadata`` is the manifest of a multi-process checkpoint's commit object."""
    if "multihost" not in metadata:  # every manifest has this key: no need to import objio.multihost
        return False
    from objio.multihost._layout import is_multihost_metadata

    return is_multihost_metadata(metadata)


def leaf_names(tree: Any) -> list[str]:
    """The name each stored leaf of ``tree`` gets in a file, in flattening order.

    >>> leaf_names({'a/b': 1.0, 'layers': [0.0, 0.0], '0': 0.0, 'ids': {3: 0.0}})
    ['~s0', 'a~1b', 'ids/~i3', 'layers/0', 'layers/1']
    """
    return [leaf_name(path) for path, leaf in tree_util.tree_flatten_with_path(tree)[0] if _is_stored(leaf)]


def leaf_name(path: tuple[Any, ...]) -> str:
    """The name of the leaf at key path ``path`` (from ``jax.tree_util.tree_flatten_with_path``)."""
    return "/".join(_segment(entry, path) for entry in path)


def _segment(entry: Any, path: tuple[Any, ...]) -> str:
    if isinstance(entry, tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, tree_util.FlattenedIndexKey):
        return str(entry.key)
    key = entry.key if isinstance(entry, tree_util.DictKey) else getattr(entry, "name", None)
    if isinstance(key, int) and not isinstance(key, bool):
        return f"~i{key}"
    if not isinstance(key, str):
        raise TypeError(
            f"save_tree names leaves by their path, and the key {key!r} in {tree_util.keystr(path)} is neither "
            f"a str nor an int; use str keys"
        )
    text = key.replace("~", "~0").replace("/", "~1")
    return "~s" + text if not text or _is_position(text) else text


def _parse_segment(segment: str) -> str | int:
    """The dict key (str or int) or list position (int) a name segment stands for."""
    if segment.startswith("~s"):
        segment = segment[2:]
    elif segment.startswith("~i"):
        return int(segment[2:])
    elif _is_position(segment):
        return int(segment)
    return segment.replace("~1", "/").replace("~0", "~")


def _nested(arrays: dict[str, Any], where: str) -> Any:
    """Nested dicts (and lists) rebuilt from the leaves' names."""
    if list(arrays) == [""]:  # the whole tree was one array
        return arrays[""]
    root: dict[str, Any] = {}
    for name, array in arrays.items():
        node = root
        *parents, last = name.split("/")
        for segment in parents:
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                raise ValueError(f"{where}: {name!r} is below {segment!r}, which is an array")
            node = child
        node[last] = array
    return _rebuild(root)


def _rebuild(node: Any) -> Any:
    """Raw segments to keys; a node whose keys are exactly the positions 0 ... n-1 becomes a list."""
    if not isinstance(node, dict):
        return node
    items = {segment: _rebuild(child) for segment, child in node.items()}
    if items and all(_is_position(s) for s in items) and sorted(map(int, items)) == list(range(len(items))):
        return [items[s] for s in sorted(items, key=int)]
    return {_parse_segment(segment): child for segment, child in items.items()}


def _is_position(segment: str) -> bool:
    """Whether a name segment reads as a list position: ASCII digits only (``str.isdigit`` alone takes "²")."""
    return segment.isascii() and segment.isdigit()


def _is_path(file: FileOrStr) -> TypeGuard[str | os.PathLike[str]]:
    return isinstance(file, (str, os.PathLike))


def holds_arrays(tree: Any) -> bool:
    """Whether ``tree`` has a leaf that :func:`save_tree` stores (an array or a number).

    Cheaper than :func:`leaf_names` on a large tree: it names nothing, and stops at the first.
    """
    return any(_is_stored(leaf) for leaf in tree_util.tree_leaves(tree))


def _is_stored(leaf: Any) -> bool:
    return isinstance(leaf, (np.ndarray, np.generic, *_NUMBERS)) or _is_jax_array(leaf)


def _is_jax_array(leaf: Any) -> bool:
    import jax

    return isinstance(leaf, jax.Array)


def _is_spec(leaf: Any) -> bool:
    import jax

    return isinstance(leaf, jax.ShapeDtypeStruct)


def _like_leaves(arrays: dict[int, np.ndarray], like: list[Any], place: bool = True) -> list[Any]:
    """The result's leaves: ``arrays[i]`` as the kind of thing ``like[i]`` is, other leaves of ``like`` as they are.

    Jax leaves are placed on their shardings in one batched call (see :func:`objio.io.save_load.to_devices`);
    with ``place=False`` they stay NumPy arrays.
    """
    leaves = [_like_leaf(arrays[i], leaf) if i in arrays else leaf for i, leaf in enumerate(like)]
    on_device = [i for i in arrays if place and (_is_jax_array(like[i]) or _is_spec(like[i]))]
    placed = to_devices([arrays[i] for i in on_device], [like[i] for i in on_device])
    for i, value in zip(on_device, placed, strict=True):
        leaves[i] = value
    return leaves


def _like_leaf(array: np.ndarray, leaf: Any) -> Any:
    """``array`` as the kind of thing a host ``leaf`` is: a numpy array or a number (jax leaves: ``_like_leaves``)."""
    if isinstance(leaf, _NUMBERS):
        convert: Callable[[Any], Any] = type(leaf)
        return convert(array.item())
    if isinstance(leaf, np.generic):
        return array[()]
    return array


def _format_of(file: FileOrStr) -> Format:
    if isinstance(file, (str, os.PathLike)) and os.fspath(file).endswith(".safetensors"):
        return "safetensors"
    return "npz"
