"""The examples run end to end with --smoke (examples/art_adversarial_training.py: tests/test_adapter_art.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / script), "--smoke", *args],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT,
    )


def test_wrap_and_train_smoke() -> None:
    proc = _run("wrap_and_train.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("CE ") for line in lines) and any(line.startswith("CE + IB-RAR") for line in lines)


def test_leaderboard_eval_smoke(tmp_path: Path) -> None:
    pytest.importorskip("pyautoattack", reason="the leaderboard example needs pyautoattack (pip install 'ib-plugins[autoattack]')")
    proc = _run("leaderboard_eval.py", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "leaderboard.md").is_file() and (tmp_path / "leaderboard.html").is_file()
    assert list(tmp_path.rglob("model_info/**/*.json"))
