"""Mutated valid files (objio's and numpy's, stored and deflated members): only typed errors escape,
and peak memory stays within the file's size plus a small constant.

CI runs short counts with a fixed seed; ``--long-faults`` runs 10,000 hypothesis examples and every
single-bit flip of every base file (docs/reliability.rst).
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zipfile
from collections import Counter
from collections.abc import Callable

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objio.codec import NpzReader, write_npz
from objio.errors import CorruptFileError

LONG = os.environ.get("OBJIO_LONG_FAULTS", "") not in ("", "0")
EXAMPLES_PER_BASE = 2_500 if LONG else 100  # 4 bases: 10,000 examples in a long run
# What loading a mutated file may allocate: the arrays it holds (at most the file's size for stored
# members; deflated members of these small bases stay far below it) plus the reader's fixed buffers.
ALLOWANCE = 8 << 20


def _arrays() -> dict[str, np.ndarray]:
    return {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b": np.linspace(0, 1, 5).astype(ml_dtypes.bfloat16),
        "i": np.array([[1, -2], [3, -4]], dtype=np.int8, order="F"),
    }


def _objio_stored() -> bytes:
    out = io.BytesIO()
    write_npz(out, list(_arrays()), list(_arrays().values()))
    return out.getvalue()


def _objio_deflated() -> bytes:
    """objio's members (objio.json included), recompressed with deflate."""
    src, out = zipfile.ZipFile(io.BytesIO(_objio_stored())), io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def _numpy(save: Callable[..., None]) -> bytes:
    out = io.BytesIO()
    values = [a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a for a in _arrays().values()]
    save(out, names=np.array(list(_arrays())), **{str(i): v for i, v in enumerate(values)})
    return out.getvalue()


BASES = {
    "objio-stored": _objio_stored(),
    "objio-deflated": _objio_deflated(),
    "np.savez": _numpy(np.savez),
    "np.savez_compressed": _numpy(np.savez_compressed),
}


def _load(raw: bytes) -> str:
    """Load every array of ``raw``; 'loaded' or 'refused' (any other exception escapes and fails the test)."""
    return "refused" if _contents(raw) is None else "loaded"


def _contents(raw: bytes) -> list[tuple[str, str, bytes]] | None:
    """Names, dtypes and bytes of every array of ``raw``, or None if it is refused with a typed error."""
    try:
        reader = NpzReader(io.BytesIO(raw), "fuzzed.npz")
        return [
            (name, str(a.dtype), a.tobytes())
            for name, a in zip(reader.names, map(reader.read, range(len(reader.names))), strict=True)
        ]
    except CorruptFileError as e:  # UnsafeFileError included
        assert e.path == "fuzzed.npz" and "fuzzed.npz" in str(e)
        return None


def _mutation(size: int) -> st.SearchStrategy[tuple[str, int, int, bytes]]:
    position = st.integers(0, size - 1)
    # Bytes near the end hold the zip directory: weight mutations there.
    near_end = st.integers(max(0, size - 200), size - 1)
    interesting = st.sampled_from([0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, size, size + 1, size - 1])
    return st.one_of(
        st.tuples(st.just("flip"), position, st.integers(0, 7), st.just(b"")),
        st.tuples(st.just("byte"), position, st.integers(0, 255), st.just(b"")),
        st.tuples(st.just("u32"), st.one_of(position, near_end), interesting | st.integers(0, 2**32 - 1), st.just(b"")),
        st.tuples(st.just("u16"), st.one_of(position, near_end), interesting.map(lambda v: v & 0xFFFF), st.just(b"")),
        st.tuples(st.just("cut"), position, st.just(0), st.just(b"")),
        st.tuples(st.just("insert"), position, st.just(0), st.binary(min_size=1, max_size=16)),
        st.tuples(st.just("delete"), position, st.integers(1, 16), st.just(b"")),
    )


def _mutate(raw: bytes, mutations: list[tuple[str, int, int, bytes]]) -> bytes:
    data = bytearray(raw)
    for kind, pos, value, blob in mutations:
        pos = min(pos, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[pos] ^= 1 << value
        elif kind == "byte" and data:
            data[pos] = value
        elif kind == "u32":
            data[pos : pos + 4] = value.to_bytes(4, "little")
        elif kind == "u16":
            data[pos : pos + 2] = value.to_bytes(2, "little")
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = blob
        elif kind == "delete":
            del data[pos : pos + value]
    return bytes(data)


@pytest.mark.parametrize("base", list(BASES))
def test_mutated_files_raise_only_typed_errors_within_bounded_memory(base: str, fault_log: Callable[..., None]) -> None:
    raw = BASES[base]
    assert _load(raw) == "loaded"
    outcomes: Counter[str] = Counter()
    worst = [0]

    @settings(
        max_examples=EXAMPLES_PER_BASE,
        derandomize=not LONG,  # CI: the same examples every run
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutations=st.lists(_mutation(len(raw)), min_size=1, max_size=6))
    def check(mutations: list[tuple[str, int, int, bytes]]) -> None:
        mutated = _mutate(raw, mutations)
        tracemalloc.start()
        try:
            outcome = _load(mutated)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < len(mutated) + ALLOWANCE, f"{peak} bytes for a {len(mutated)}-byte file"
        outcomes[outcome] += 1
        worst[0] = max(worst[0], peak)

    check()
    assert outcomes["refused"] > 0
    fault_log(fault="fuzz", base=base, trials=outcomes.total(), peak_bytes=worst[0], **outcomes)


def _same(contents: list[tuple[str, str, bytes]], original: list[tuple[str, str, bytes]] | None) -> bool:
    """The same names and bytes; a dtype is the same, or the raw void form of an extension dtype.

    A flip in the zip directory's copy of the name ``objio.json`` hides the metadata, and a bfloat16
    array then reads as ``|V2``, as from a plain npz; load_var_collection refuses to assign that to a
    bfloat16 variable (DtypeMismatchError), so the model cannot change.
    """
    assert original is not None
    return len(contents) == len(original) and all(
        (name, data) == (name0, data0) and (dtype == dtype0 or (dtype.startswith("|V") and dtype0 in _EXTENSION))
        for (name, dtype, data), (name0, dtype0, data0) in zip(contents, original, strict=True)
    )


_EXTENSION = {"bfloat16"}


@pytest.mark.parametrize("base", list(BASES))
def test_single_bit_flips_raise_only_typed_errors(base: str, fault_log: Callable[..., None]) -> None:
    """Every bit of every byte flipped in a long run; in CI one bit of every third byte."""
    raw = BASES[base]
    original = _contents(raw)
    outcomes: Counter[str] = Counter()
    worst = 0
    tracemalloc.start()
    try:
        for pos in range(0, len(raw), 1 if LONG else 3):
            for bit in range(8) if LONG else [pos % 8]:
                flipped = bytearray(raw)
                flipped[pos] ^= 1 << bit
                tracemalloc.reset_peak()
                contents = _contents(bytes(flipped))
                peak = tracemalloc.get_traced_memory()[1]
                # A flip the reader accepts lies where it changes nothing (padding, a field npz does
                # not use): the model must never load different values.
                assert contents is None or _same(contents, original), f"bit {bit} of byte {pos} changed the values"
                outcomes["refused" if contents is None else "loaded unchanged"] += 1
                assert peak < len(raw) + ALLOWANCE, f"{peak} bytes after flipping bit {bit} of byte {pos}"
                worst = max(worst, peak)
    finally:
        tracemalloc.stop()
    # Flips in padding, in a zip header's unused fields or in the names' spare room change nothing
    # that matters; the CRC-32 catches every flip in array data.
    assert outcomes["refused"] > 0
    fault_log(fault="bit-flips", base=base, trials=outcomes.total(), peak_bytes=worst, **outcomes)
    assert outcomes["loaded unchanged"] + outcomes["refused"] == outcomes.total()
