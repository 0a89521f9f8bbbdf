"""Tests of the ``ib-plugins`` command line, run in-process through :func:`ib_plugins.cli.main`
(plus one subprocess call of the installed console script).

Runs are tiny (digits, one epoch on 50-200 images, attacks on 30-50 test images). Bad input must
exit with status 2 and a one-line ``ib-plugins COMMAND: error: ...`` message on stderr, without a
traceback and without creating or changing results folders.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ib_plugins.cli import build_parser, main
from ib_plugins.training import TrainConfig, Trainer

COMMANDS = ("demo", "train", "evaluate", "select-layers", "report", "leaderboard")
TINY = ["--epochs", "1", "--train-limit", "200", "--test-limit", "50", "--batch-size", "50", "--no-progress"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fails(capsys, argv: list[str], *, match: str) -> str:
    """Run ``main(argv)``, expect exit status 2 and ``match`` in the one error line on stderr."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"ib-plugins {argv[0]}: error: "), err
    assert "Traceback" not in err
    assert re.search(match, err), err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished one-epoch digits run (the folder; do not modify it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    Trainer(TrainConfig(epochs=1, train_limit=200, test_limit=50, batch_size=50), out_dir=out, progress=False).fit()
    return out


# ---------------------------------------------------------------------------------------------
# Help
# ---------------------------------------------------------------------------------------------
def test_console_script_help():
    script = Path(sys.executable).parent / "ib-plugins"
    if not script.is_file():
        pytest.skip(f"the console script is not installed next to the interpreter ({script})")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ib-plugins")
    for command in COMMANDS:
        assert command in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ib-plugins {command}")


def test_train_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    flags = ("--preset", "--method", "--ib-layers", "--mask-every", "--x-for-ib", "--resume", "--overwrite",
             "--train-limit")
    for flag in flags:
        assert flag in out


def test_missing_or_unknown_command_is_a_usage_error(capsys):
    for argv in ([], ["nope"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "usage: ib-plugins" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# train -> evaluate -> report -> leaderboard
# ---------------------------------------------------------------------------------------------
def test_train_evaluate_report_leaderboard(tmp_path, capsys):
    run, ev = tmp_path / "run", tmp_path / "eval"
    assert main(["train", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "| test_acc |" in out and f"Checkpoint: {run / 'checkpoint.pt'}" in out
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.json", "checkpoint.pt"} <= names
    assert any(n.endswith(".png") for n in names)
    assert json.loads((run / "config.json").read_text())["train_limit"] == 200

    assert main(["evaluate", str(run / "checkpoint.pt"), "--out", str(ev), "--attacks", "pgd,fgsm", "--n", "50",
                 "--steps-sweep", "1,2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"clean accuracy +\d+\.\d\d% on 50 images", out)
    assert re.search(r"pgd +accuracy +\d+\.\d\d%", out) and re.search(r"fgsm +accuracy +\d+\.\d\d%", out)
    names = {p.name for p in ev.iterdir()}
    assert {"config.json", "metrics.json", "results.md"} <= names and any(n.endswith(".png") for n in names)
    metrics = json.loads((ev / "metrics.json").read_text())
    assert [a["name"] for a in metrics["suite"]["attacks"]] == ["pgd", "fgsm"]

    table_file = tmp_path / "table.md"
    assert main(["report", str(ev), str(ev), "--out", str(table_file)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0] == "| run | Clean | pgd | fgsm |"
    assert lines[2].startswith(f"| {ev} | ") and len(lines) == 4
    clean = 100 * metrics["suite"]["clean_accuracy"]
    assert f"| {clean:.2f} |" in lines[2]
    assert table_file.read_text().strip() == out.strip()

    if importlib.util.find_spec("ib_plugins.leaderboard") is None:
        pytest.skip("ib_plugins.leaderboard does not exist; the leaderboard step is skipped")
    from ib_plugins.leaderboard import LeaderboardEntry

    pgd = next(a for a in metrics["suite"]["attacks"] if a["name"] == "pgd")
    entry = LeaderboardEntry(
        model_name="digits_ce_tiny", dataset="digits", threat_model="Linf", eps=pgd["eps"],
        clean_acc=f"{clean:.2f}", autoattack_acc=f"{100 * pgd['accuracy']:.2f}", name="CE (1 epoch)",
        architecture="DigitsCNN", footnote="PGD-10 accuracy, not AutoAttack (test data)",
    )
    info_root = tmp_path / "model_info_root"
    entry.to_json(entry.model_info_path(info_root))
    board = tmp_path / "board"
    assert main(["leaderboard", str(info_root), "--out", str(board), "--title", "CLI test"]) == 0
    out = capsys.readouterr().out
    assert "digits_ce_tiny" in out
    assert "digits_ce_tiny" in (board / "leaderboard.md").read_text()
    assert "<html" in (board / "leaderboard.html").read_text().lower()


def test_train_results_folder_has_results_md(trained):
    """The command-line contract: every command writes config.json, metrics.json, results.md and PNGs."""
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "metrics.json"} <= names and any(n.endswith(".png") for n in names)
    assert "results.md" in names, f"train wrote {sorted(names)}"


def test_train_config_file_and_flag_overrides(tmp_path, capsys):
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"alpha": 0.1, "epochs": 5, "seed": 3}))
    run = tmp_path / "run"
    argv = ["train", "--config", str(cfg_file), "--out", str(run), "--ib", "--ib-layers", "conv3,fc1", "--epochs", "1",
            "--train-limit", "50", "--test-limit", "20", "--batch-size", "25", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    config = json.loads((run / "config.json").read_text())
    assert (config["alpha"], config["seed"], config["epochs"]) == (0.1, 3, 1)  # the flag overrides the file
    assert config["ib"] is True and config["ib_layers"] == ["conv3", "fc1"]
    assert config["y_kernel"] == "gaussian" and config["momentum"] == 0.9  # resolved from the preset

    cfg_file.write_text(json.dumps({"nope": 1}))
    argv = ["train", "--config", str(cfg_file), "--out", str(tmp_path / "x")]
    _fails(capsys, argv, match="unknown training config keys: nope")
    assert not (tmp_path / "x").exists()


def test_train_resume_of_a_finished_run_does_not_retrain(trained, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        (run / name).write_bytes((trained / name).read_bytes())
    os.utime(run / "checkpoint.pt", ns=(1_000_000_000, 1_000_000_000))
    assert main(["train", "--out", str(run), "--resume", *TINY]) == 0
    assert (run / "checkpoint.pt").stat().st_mtime_ns == 1_000_000_000
    assert "| epochs | 1 |" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# Bad input: exit status 2, a clear message, nothing created or changed
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--dataset", "nope"], r"dataset: expected one of 'digits', 'fashion-mnist', .*got 'nope'"),
        (["--model", "nope"], r"model: expected one of .*'digits-cnn'.*got 'nope'"),
        (["--method", "nope"], r"method: expected one of 'ce', 'pgd-at', 'trades', 'mart', 'hbar', 'vib', 'entropic'"),
        (["--preset", "nope"], r"preset: expected one of 'ibrar-code', 'paper', 'standard', got 'nope'"),
        (["--method", "pgd-at", "--eps", "1.5"], r"eps: expected a number in \[0, 1\]"),
        (["--ib", "--ib-layers", "nope"], r"nope"),
    ],
)
def test_train_bad_input(tmp_path, capsys, flags, match):
    out = tmp_path / "run"
    _fails(capsys, ["train", "--out", str(out), *TINY, *flags], match=match)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so --device cuda is valid")
def test_cuda_without_cuda(trained, tmp_path, capsys):
    _fails(capsys, ["train", "--out", str(tmp_path / "run"), "--device", "cuda", *TINY], match="CUDA is not available")
    _fails(capsys, ["evaluate", str(trained / "checkpoint.pt"), "--out", str(tmp_path / "ev"), "--device", "cuda"],
           match="CUDA is not available")
    assert not (tmp_path / "run").exists() and not (tmp_path / "ev").exists()


def test_train_missing_dataset_files(tmp_path, capsys):
    empty = tmp_path / "no-data"
    empty.mkdir()
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--dataset", "cifar10", "--model", "keras-cifar-cnn", "--data-dir", str(empty)]
    _fails(capsys, [*argv, "--no-progress"], match=re.escape(str(empty)))
    assert not out.exists()


def test_train_into_a_folder_of_another_run(trained, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((trained / "config.json").read_bytes())
    before = _snapshot(run)
    argv = ["train", "--out", str(run), *TINY, "--alpha", "0.5"]
    _fails(capsys, argv, match="already holds a different run.*--overwrite")
    assert _snapshot(run) == before
    _fails(capsys, ["train", "--out", str(run), *TINY, "--resume"], match="no checkpoint to resume from")


def test_evaluate_checkpoint_of_another_model(trained, tmp_path, capsys):
    out = tmp_path / "ev"
    argv = ["evaluate", str(trained / "checkpoint.pt"), "--model", "lenet5", "--out", str(out), "--no-progress"]
    _fails(capsys, argv, match="holds a 'digits-cnn' model, not 'lenet5'")
    assert not out.exists()


def test_evaluate_truncated_checkpoint(trained, tmp_path, capsys):
    data = (trained / "checkpoint.pt").read_bytes()
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "ev"
    out.mkdir()
    (out / "results.md").write_text("keep me\n")
    _fails(capsys, ["evaluate", str(bad), "--out", str(out)], match="corrupt or truncated")
    assert _snapshot(out) == {"results.md": b"keep me\n"}
    _fails(capsys, ["evaluate", str(tmp_path / "missing.pt")], match="checkpoint not found")


def test_evaluate_unknown_attack(trained, tmp_path, capsys):
    _fails(capsys, ["evaluate", str(trained / "checkpoint.pt"), "--attacks", "pgd,nope", "--out", str(tmp_path / "ev")],
           match="nope")
    assert not (tmp_path / "ev").exists()


def test_evaluate_and_report_label_the_fixed_c_cw_and_offer_cw_l2(trained, tmp_path, capsys):
    ev = tmp_path / "ev"
    assert main(["evaluate", str(trained / "checkpoint.pt"), "--out", str(ev), "--attacks", "cw,cw-l2", "--n", "20",
                 "--cw-steps", "5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"cw +accuracy .*median L2 of successes .*\[fixed-c CW-L2 as in the paper \(torchattacks CW, "
                     r"c=0\.1, kappa=0, 5 steps, lr 0\.1; not norm-bounded, not minimum-norm\)\]", out)
    assert re.search(r"cw-l2 +accuracy .*\[CW-L2 with the corrected margin", out)
    results_md = (ev / "results.md").read_text()
    assert "| cw | l2 | none (fixed c=0.1) |" in results_md
    cw_lines = [line for line in results_md.splitlines() if line.startswith(("| cw |", "cw:"))]
    assert len(cw_lines) == 2 and not any("unbounded" in line for line in cw_lines)
    assert main(["report", str(ev)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "| run | Clean | cw (fixed c=0.1) | cw-l2 (min-norm) |"
    assert "median L2" in out.splitlines()[2] or "no success" in out.splitlines()[2]
    assert "cw: fixed-c CW-L2 as in the paper" in out and "cw-l2: CW-L2 with the corrected margin" in out


def test_report_bad_input(tmp_path, capsys):
    _fails(capsys, ["report", str(tmp_path)], match="has no metrics.json")
    (tmp_path / "metrics.json").write_text(json.dumps({"epochs": 1}))
    _fails(capsys, ["report", str(tmp_path)], match="holds no attack-suite results")


def test_parser_builds_every_command():
    parser = build_parser()
    args = parser.parse_args(["evaluate", "c.pt", "--attacks", "pgd,fgsm", "--steps-sweep", "1,10"])
    assert (args.command, args.attacks, args.steps_sweep) == ("evaluate", "pgd,fgsm", "1,10")
    args = parser.parse_args(["train", "--out", "x", "--no-ib", "--mask", "code"])
    assert args.ib is False and args.mask == "code"


# ---------------------------------------------------------------------------------------------
# select-layers and demo (slow)
# ---------------------------------------------------------------------------------------------
def _table_rows(text: str) -> list[str]:
    return [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "---" not in line]


@pytest.mark.slow
def test_select_layers(tmp_path, capsys):
    out = tmp_path / "sel"
    argv = ["select-layers", "--epochs", "1", "--train-limit", "200", "--eval-n", "50", "--candidates", "conv3,fc1",
            "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = _table_rows(printed)
    assert rows[0] == "network"
    assert rows[1:5] == ["ce", "layer-conv3", "layer-fc1", "all-layers"]
    assert set(rows[5:]) <= {"selected"}
    assert "Selected robust layers:" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["name"] for r in metrics["rows"]][:4] == ["ce", "layer-conv3", "layer-fc1", "all-layers"]
    assert metrics["rows"][1]["layers"] == ["conv3"] and metrics["rows"][3]["layers"] == ["conv3", "fc1"]
    assert set(metrics["selected"]) <= {"conv3", "fc1"}
    for row in metrics["rows"]:
        assert 0.0 <= row["pgd_acc"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0
    assert {"config.json", "metrics.json", "results.md"} <= {p.name for p in out.iterdir()}

    # A second call reuses the finished networks (no checkpoint is rewritten).
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoint.pt")}
    assert len(stamps) >= 4
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoint.pt")} == stamps


@pytest.mark.slow
def test_demo_tiny(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "1", "--eval-n", "30", "--autoattack-n", "0", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    rows = _table_rows(printed)
    assert rows[:3] == ["Model", "CE", "IB-RAR"]
    header = next(line for line in printed.splitlines() if line.startswith("| Model |"))
    for attack in ("Clean", "pgd", "cw", "fgsm", "fab", "nifgsm"):
        assert attack in header
    assert "| cw (fixed c=0.1) |" in header and "CW is unbounded" not in printed
    assert "cw: fixed-c CW-L2 as in the paper (torchattacks CW, c=0.1, kappa=0, 200 steps, lr 0.1" in printed
    assert "Accuracy (%) on 30 test images" in printed
    assert {"config.json", "metrics.json", "results.md"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_eval"] == 30 and set(metrics["models"]) >= {"CE", "IB-RAR"}
