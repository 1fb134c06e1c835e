"""The README's first command runs this demo: it must train, be preempted, and resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "examples" / "train_and_resume.py"


def test_demo_is_preempted_and_resumes_from_the_latest_checkpoint(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(DEMO)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "step  35  preempted (SIGKILL)" in out
    assert "(run 1 ended with signal 9)" in out
    assert "resumed from objio-demo-run/ckpt/0000000030.npz at step 30 (the model's own counter says 30)" in out
    assert "done: step 60" in out and "checkpoints kept: [40, 50, 60]" in out
    assert sorted(p.name for p in (tmp_path / "objio-demo-run" / "ckpt").iterdir()) == [
        "0000000040.npz",
        "0000000050.npz",
        "0000000060.npz",
    ]
