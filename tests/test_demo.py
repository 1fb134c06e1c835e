"""The README's first command runs this demo: it must train, be preempted, resume, and run again and again."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "train_and_resume.py"


def run_demo(cwd: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, str(DEMO), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "ckpt").iterdir())


def test_demo_is_preempted_resumes_and_says_done_when_run_again(tmp_path: Path) -> None:
    out = run_demo(tmp_path)
    assert "step  35  preempted (SIGKILL)" in out
    assert "(run 1 ended with signal 9)" in out
    assert "resumed from objio-demo-run/ckpt/0000000030.npz at step 30 (the model's own counter says 30)" in out
    assert "done: step 60" in out and "checkpoints kept: [40, 50, 60]" in out
    assert "look at the checkpoints: objio ls objio-demo-run" in out
    run = tmp_path / "objio-demo-run"
    assert checkpoints(run) == ["0000000040.npz", "0000000050.npz", "0000000060.npz"]
    before = {name: (run / "ckpt" / name).read_bytes() for name in checkpoints(run)}

    again = run_demo(tmp_path)  # the second run of issue 9 crashed with UnboundLocalError
    assert "holds the finished run (pass --fresh to train again in a new folder)" in again
    assert "training is already done: step 60, loss 0.0" in again
    assert "run 1" not in again
    assert {name: (run / "ckpt" / name).read_bytes() for name in checkpoints(run)} == before

    fresh = run_demo(tmp_path, "--fresh")
    assert "training to step 60 in objio-demo-run-2" in fresh and "done: step 60" in fresh
    assert checkpoints(tmp_path / "objio-demo-run-2") == ["0000000040.npz", "0000000050.npz", "0000000060.npz"]


def test_what_the_demo_writes_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["objio-demo-run/ckpt/0000000060.npz", "objio-demo-run-2/ckpt/0000000060.npz"]
    result = subprocess.run(["git", "check-ignore", *paths], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == paths
