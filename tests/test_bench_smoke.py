"""bench/compare.py runs end to end on scaled-down workloads and reports every method (no timings asserted).

The end-to-end run uses ``--in-process`` (a fresh interpreter per measurement would take minutes on
a busy machine); one measurement runs through the real fresh-process path. Runs only where the
peers of the ``bench`` extra (safetensors, orbax-checkpoint) are installed.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from objio.testing import load_module

ROOT = Path(__file__).resolve().parents[1]
SAVES = ["objio", "objio-async", "raw", "np", "safetensors", "pickle", "orbax"]
LOADS = ["objio", "objio-vc", "objio-mmap", "raw", "np", "safetensors", "pickle", "orbax"]
PEER_ROWS = ["raw write+fsync / readinto", "`np.savez` / `np.load`", "safetensors `save_file` / `load_file`"]
PEER_ROWS += ["pickle protocol 5", "orbax-checkpoint `StandardCheckpointer`"]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


needs_the_peers = pytest.mark.skipif(
    not (_installed("safetensors") and _installed("orbax.checkpoint")),
    reason="the bench extra is not installed: pip install -e '.[bench]'",
)


@needs_the_peers
def test_compare_runs_every_method_and_prints_the_tables(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "compare.py"), "--quick", "--repeat", "1", "--workloads", "many,tiny"]
        + ["--in-process", "--dir", str(tmp_path), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["results"]

    many = results["many"]
    expected = [f"save {m}" for m in SAVES] + [f"load {m} {c}" for m in LOADS for c in ("warm", "cold")]
    assert sorted(many) == sorted(expected)
    for key, runs in many.items():
        assert len(runs) == 1, key
        run = runs[0]
        if "skipped" in run:  # only an objio feature still being built may be skipped, with a note
            assert key.split()[1] in ("objio-async", "objio-mmap"), f"{key}: {run['skipped']}"
            continue
        assert run["seconds"] > 0, key
        if key.startswith("load"):
            assert (run["arrays"], run["bytes"]) == (200, 200 * 64 * 64 * 4), key
    tiny = results["tiny"]
    assert tiny["tiny-save objio"][0]["first"] > tiny["tiny-save objio"][0]["seconds"] > 0
    assert sorted(k.split()[1] for k in tiny if k.startswith("tiny-load")) == sorted(
        ["objio", "objio-vc", "np", "safetensors", "pickle", "orbax"]
    )

    printed = done.stdout
    assert "| objio ÷ | save many | load many warm | load many cold |" in printed
    for row in PEER_ROWS:
        assert f"| {row} | " in printed, row
    assert "## tiny: Linear(768, 1)" in printed and "load average before:" in printed
    assert not list(tmp_path.glob("objio-compare-*")), "compare.py left its checkpoints behind"


@needs_the_peers
def test_a_measurement_runs_in_a_fresh_process_and_a_failing_one_stops_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    compare = load_module(ROOT / "bench" / "compare.py", "compare")
    np.savez(tmp_path / "two.npz", w0000=np.ones((3, 4), np.float32), w0001=np.zeros(5, np.float32))
    task = {"op": "load", "method": "np", "seed": "", "shapes": [[3, 4], [5]], "path": str(tmp_path / "two.npz")}

    result = compare.run_child(task)
    assert (result["arrays"], result["bytes"]) == (2, 17 * 4)
    assert result["seconds"] > 0 and result["peak"] > 0 and result["rss_before"] > 0

    with pytest.raises(SystemExit, match=r"load np failed:(.|\n)*FileNotFoundError(.|\n)*absent\.npz"):
        compare.run_child({**task, "path": str(tmp_path / "absent.npz")})
