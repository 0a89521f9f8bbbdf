"""Progress and output (issue 14, item 7): tqdm on a terminal, plain lines without ``\\r`` elsewhere,
``--no-progress`` silences all, every long phase is named, and the demo labels its runs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ib_plugins._progress import LineProgress, PhaseProgress, is_interactive, progress_bar, progress_iter


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_every_tenth_and_at_the_end_without_carriage_returns():
    stream = io.StringIO()
    with progress_bar(total=100, desc="pgd", unit="batch", stream=stream) as bar:
        for _ in range(100):
            bar.update(1)
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and isinstance(bar, LineProgress)
    assert lines[0] == "pgd: 0/100 batch"
    assert [line.split(" (")[0] for line in lines[1:-1]] == [f"pgd: {k}/100 batch" for k in range(10, 100, 10)]
    assert lines[-1].startswith("pgd: done, 100/100 batch in ") and lines[-1].endswith(" s")


def test_lines_every_interval_seconds_and_an_unfinished_bar_says_so():
    stream = io.StringIO()
    bar = LineProgress(total=1000, desc="AutoAttack", unit="batch", stream=stream, interval=0.0)
    bar.update(1)
    bar.update(1)
    bar.close()
    bar.close()  # once
    lines = stream.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[1:3]] == ["AutoAttack: 1/1000 batch", "AutoAttack: 2/1000 batch"]
    assert lines[-1].startswith("AutoAttack: stopped at 2/1000 batch in ") and len(lines) == 4


def test_a_terminal_gets_tqdm_and_disabled_progress_writes_nothing():
    tqdm = pytest.importorskip("tqdm", reason="tqdm draws the bar on a terminal")
    terminal = _Terminal()
    assert is_interactive(terminal) and not is_interactive(io.StringIO())
    bar = progress_bar(total=3, desc="fgsm", stream=terminal)
    assert isinstance(bar, tqdm.tqdm)
    bar.update(3)
    bar.close()
    assert "fgsm" in terminal.getvalue()
    quiet = io.StringIO()
    off = progress_bar(total=3, desc="fgsm", enabled=False, stream=quiet)
    off.update(3)
    off.set_postfix(robust="1%")
    off.set_postfix_str("x")
    off.close()
    assert list(progress_iter(range(3), desc="x", enabled=False, stream=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_phases_write_their_names_when_they_start():
    stream = io.StringIO()
    with PhaseProgress(total=2, desc="audit", unit="step", stream=stream) as phases:
        with phases.phase("PGD eps=0.1"):
            pass
        with phases.phase("Square"):
            pass
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("audit: 0/2 step (0%") and lines[1].endswith("[PGD eps=0.1]")
    assert lines[2].startswith("audit: 1/2 step (50%") and lines[2].endswith("[Square]")
    assert lines[3].startswith("audit: done, 2/2 step in ") and "Square" not in lines[3]


def _tiny_model_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
    return net, x, y


def test_each_attack_of_a_suite_is_named_on_stderr(capsys):
    from ib_plugins.evaluation import AttackSpec, evaluate_suite

    net, x, y = _tiny_model_and_data()
    specs = [AttackSpec("fgsm", "linf", 0.1, {}), AttackSpec("pgd", "linf", 0.1, {"steps": 2, "alpha": 0.05})]
    evaluate_suite(net, x, y, specs, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "fgsm: 0/3 batch" in err and "pgd: 0/3 batch" in err
    assert "fgsm: done, 3/3 batch in " in err and "pgd: done, 3/3 batch in " in err
    evaluate_suite(net, x, y, specs, batch_size=4, progress=False)
    assert capsys.readouterr().err == ""


def test_the_audit_names_each_of_its_steps(capsys):
    from ib_plugins.audit import run_audit

    net, x, y = _tiny_model_and_data()
    run_audit(net, out_dir=None, quick=True, x=x, y=y, eps=0.1, surrogate=False, eps_grid=[0.0, 0.1, 0.5], progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    for step in ("[PGD eps=0.1]", "[FGSM]", "[PGD 3 restarts]", "[CW-L2 (corrected margin)]", "[Square]",
                 "[PGD margin loss]"):
        assert step in err, step
    assert "audit: done, " in err
    run_audit(net, out_dir=None, quick=True, x=x, y=y, eps=0.1, surrogate=False, eps_grid=[0.0, 0.1, 0.5],
              progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_select_layers_names_each_network_and_its_training(tmp_path, capsys):
    from ib_plugins.experiments import select_robust_layers

    select_robust_layers(candidates=["conv3"], epochs=1, train_limit=100, eval_n=20, out_dir=tmp_path / "sel",
                         progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "[ce (ce)]" in err and "[layer-conv3 (ce + IB on conv3)]" in err and "[all-layers (ce + IB on conv3)]" in err
    assert "train layer-conv3 (ce + IB on conv3): done, 1/1 epoch" in err
    assert "select-layers: done, " in err and "pgd: done, 1/1 batch" in err


@pytest.mark.slow
def test_piped_demo_output_has_no_carriage_return_and_names_every_phase(tmp_path):
    out = tmp_path / "demo"
    script = Path(sys.executable).parent / "ib-plugins"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "ib_plugins.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*command, "demo", "--out", str(out), "--epochs", "1", "--eval-n", "30", "--autoattack-n", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, check=False, env=env, cwd=tmp_path,
    )
    text = proc.stdout.decode()
    assert proc.returncode == 0, text[-3000:]
    assert "\r" not in text
    for phase in ("demo: 0/4 phase", "[train CE (ce, no IB)]", "[attack CE (IB-RAR suite: pgd, cw, fgsm, fab, nifgsm)]",
                  "[train IB-RAR (ce + IB on conv3, fc1 + code mask)]", "[attack IB-RAR (IB-RAR suite: ",
                  "train CE (ce, no IB): done, 1/1 epoch", "train IB-RAR (ce + IB on conv3, fc1 + code mask): done, 1/1 "
                  "epoch", "pgd: done, 1/1 batch", "nifgsm: done, 1/1 batch", "demo: done, 4/4 phase"):
        assert phase in text, phase
    # the IB-RAR run is never labelled as a plain "ce" run
    assert not [line for line in text.splitlines() if line.startswith(("ce epoch", "ce:"))]
    assert "| IB-RAR |" in text and f"Written: {out}/results.md" in text


@pytest.mark.slow
def test_no_progress_silences_every_bar(tmp_path, capsys):
    from ib_plugins.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "1", "--eval-n", "20", "--autoattack-n", "0", "--no-progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "| IB-RAR |" in captured.out


def test_the_trainers_per_batch_bar_writes_plain_lines_off_a_terminal(tmp_path, capsys):
    from ib_plugins.training import TrainConfig, Trainer

    cfg = TrainConfig(dataset="digits", model="digits-cnn", method="ce", epochs=1, batch_size=50, train_limit=200,
                      test_limit=50)
    Trainer(cfg, out_dir=tmp_path / "run", progress=True).fit()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "ce epoch 1/1: 0/4 batch" in err and "ce epoch 1/1: done, 4/4 batch in " in err
