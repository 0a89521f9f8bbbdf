"""ib-plugins reproduce: grids of ordinary train + evaluate cells, resumable, with honest statistics."""

from __future__ import annotations

import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ib_plugins.cli import main
from ib_plugins.reproduce import GRIDS, build_report, expand_grid, list_grids, load_grid, print_commands, run_grid
from ib_plugins.stats import t_quantile

ROOT = Path(__file__).resolve().parents[1]

# Two cells: CE and CE + IB-RAR, one seed, on 150 digits images: seconds per cell.
SMALL = {
    "name": "small", "datasets": ["digits"], "models": ["digits-cnn"], "methods": ["ce"], "ib": [False, True],
    "seeds": [0], "train": {"epochs": 2, "batch_size": 50, "train_limit": 150}, "ib_train": {"ib_layers": "robust"},
    "evaluate": {"suite": "ibrar", "n": 40, "attacks": ["fgsm"]},
}


# -- grids -------------------------------------------------------------------------------------------------


def test_every_built_in_grid_expands_to_valid_cells():
    for name in list_grids():
        cells = expand_grid(load_grid(name))
        assert cells and len({c.key for c in cells}) == len(cells), name
    tiny = expand_grid(load_grid("digits-tiny"))
    assert len(tiny) == 8 and {c.config["method"] for c in tiny} == {"ce", "pgd-at"}
    assert sum(c.ib for c in tiny) == 4
    fmnist = expand_grid(load_grid("fmnist-cpu"))
    assert len(fmnist) == 24 and {c.config["model"] for c in fmnist} == {"vgg-mini"}


def test_entropic_grids_pretrain_first_and_start_from_that_checkpoint(tmp_path):
    cells = expand_grid(load_grid("entropic-fmnist-cpu"))
    pre = [c for c in cells if c.row.endswith("pretrain-ce")]
    retrain = [c for c in cells if c.config["method"] == "entropic"]
    assert len(pre) == len(retrain) == 3 and cells[: len(pre)] == pre
    assert all(c.pretrain == f"fashion-mnist/lenet5/pretrain-ce/seed{c.config['seed']}" for c in retrain)
    assert pre[0].config["optimizer"] == "adam" and pre[0].config["method"] == "ce"
    script = print_commands("entropic-fmnist-cpu", out_dir=tmp_path)
    config = json.loads((tmp_path / "cells" / retrain[0].key / "train_config.json").read_text())
    assert config["init_checkpoint"].endswith("pretrain-ce/seed0/train/checkpoint.pt")
    assert script.index("pretrain-ce/seed0/train_config.json") < script.index("entropic/seed0/train_config.json")


def test_variants_of_ib_settings_share_one_baseline():
    cells = expand_grid(load_grid("ibrar-table3-layers"))
    rows = sorted({c.row for c in cells})
    assert rows == ["cifar10/vgg16/ce", "cifar10/vgg16/ce+ib/all", "cifar10/vgg16/ce+ib/robust"]
    base = next(c for c in cells if c.row == "cifar10/vgg16/ce")
    assert "ib_layers" not in base.config and base.config.get("mask") is None


@pytest.mark.parametrize(("grid", "match"), [
    ({**SMALL, "learning_rate": 1}, r"grid: unknown keys \['learning_rate'\]"),
    ({**SMALL, "seeds": []}, "'seeds' must be a non-empty list"),
    ({**SMALL, "seeds": [-1]}, "'seeds' must be ints >= 0"),
    ({**SMALL, "ib": ["yes"]}, "'ib' must list booleans"),
    ({**SMALL, "methods": ["sgd"]}, r"cell digits/digits-cnn/sgd/seed0: method: expected one of"),
    ({**SMALL, "train": {"epochs": 0}}, r"cell digits/digits-cnn/ce/seed0: epochs: expected an int >= 1"),
    ({**SMALL, "evaluate": {"n": 5, "bogus": 1}}, r"unknown 'evaluate' keys \['bogus'\]"),
    ({**SMALL, "metric": "robustness"}, r"grid: 'metric' must be one of accuracy, success_rate, got 'robustness'"),
    ("no-such-grid", "grid: expected a built-in grid"),
])
def test_bad_grids_are_named(grid, match):
    with pytest.raises(ValueError, match=match):
        load_grid(grid)


def test_grid_files_json_and_errors(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(SMALL))
    assert load_grid(path)["name"] == "small"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"g\.json is not valid JSON"):
        load_grid(path)


# -- the report's statistics ---------------------------------------------------------------------------------


def _fake_cell(out: Path, cell, clean: float, fgsm: float) -> None:
    from ib_plugins.reproduce import _current_attacks, _train_config
    from ib_plugins.training import TrainConfig, resolve_config

    folder = out / "cells" / cell.key / "eval"
    folder.mkdir(parents=True)
    resolved = resolve_config(TrainConfig.from_dict(_train_config(out, cell, device="cpu", data_dir=None)))
    (folder / "config.json").write_text(json.dumps({"kind": "evaluate", "train_config": resolved.to_dict()}))
    settings = _current_attacks(cell)["fgsm"]  # the attack settings a real evaluation records
    metrics = {"suite": {"clean_accuracy": clean, "attacks": [{"name": "fgsm", "accuracy": fgsm, "success_rate": 0.1,
                                                               **settings}]}}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_means_stds_and_paired_t_intervals(tmp_path):
    grid = {**SMALL, "seeds": [0, 1, 2]}
    cells = expand_grid(load_grid(grid))
    values = {  # (clean, fgsm) per seed
        "ce": [(0.90, 0.40), (0.92, 0.44), (0.91, 0.42)],
        "ce+ib": [(0.91, 0.45), (0.93, 0.47), (0.90, 0.49)],
    }
    for cell in cells:
        method = cell.row.split("/")[2]
        _fake_cell(tmp_path, cell, *values[method][cell.config["seed"]])
    report = build_report(tmp_path, grid)
    assert report["missing"] == [] and report["columns"] == ["clean", "fgsm"]
    base = next(r for r in report["rows"] if r["row"] == "digits/digits-cnn/ce")
    assert base["summary"]["fgsm"]["mean"] == pytest.approx(42.0)
    assert base["summary"]["fgsm"]["std"] == pytest.approx(2.0)
    (pair,) = report["pairs"]
    diff = pair["difference"]["fgsm"]  # per-seed +5, +3, +7 points
    assert diff["mean"] == pytest.approx(5.0) and diff["std"] == pytest.approx(2.0)
    half = t_quantile(0.95, 2) * 2.0 / math.sqrt(3)
    assert diff["low"] == pytest.approx(5.0 - half) and diff["high"] == pytest.approx(5.0 + half)
    md = (tmp_path / "report.md").read_text()
    assert "| digits/digits-cnn/ce | 3 | 91.00 ± 1.00 | 42.00 ± 2.00 |" in md
    assert f"+5.00 [{5.0 - half:+.2f}, {5.0 + half:+.2f}]" in md
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_report_leaves_out_stale_cells_and_says_so(tmp_path):
    cells = expand_grid(load_grid(SMALL))
    _fake_cell(tmp_path, cells[0], 0.9, 0.4)
    stale = cells[1]
    folder = tmp_path / "cells" / stale.key / "eval"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"train_config": {"method": "pgd-at"}}))
    (folder / "metrics.json").write_text(json.dumps({"suite": {"clean_accuracy": 1.0, "attacks": []}}))
    report = build_report(tmp_path, SMALL)
    assert report["missing"] == [stale.key]
    assert "Missing cells (1)" in (tmp_path / "report.md").read_text()
    one_seed = build_report(tmp_path, SMALL)
    assert all(r["summary"]["clean"]["std"] is None for r in one_seed["rows"])


def test_report_leaves_out_cells_evaluated_with_other_options(tmp_path):
    from ib_plugins.reproduce import _eval_kwargs

    cells = expand_grid(load_grid(SMALL))
    for cell in cells[:2]:
        _fake_cell(tmp_path, cell, 0.9, 0.4)
    (tmp_path / "cells" / cells[0].key / "cell.json").write_text(json.dumps({"evaluate": _eval_kwargs(cells[0])}))
    other = {**_eval_kwargs(cells[1]), "n": 7}  # e.g. the grid's evaluate section changed after this cell ran
    (tmp_path / "cells" / cells[1].key / "cell.json").write_text(json.dumps({"evaluate": other}))
    report = build_report(tmp_path, SMALL)
    assert cells[0].key not in report["missing"] and cells[1].key in report["missing"]


def test_cells_evaluated_with_older_attack_settings_are_left_out_then_re_evaluated(tmp_path, caplog):
    # A cell whose metrics record other attack settings than this version builds (an ib-plugins whose
    # attack changed since) is not this suite's number: the report leaves it out, a rerun evaluates it again.
    out = tmp_path / "grid"
    run_grid(SMALL, out_dir=out, progress=False)
    cells = expand_grid(load_grid(SMALL))
    old, kept = (out / "cells" / cells[0].key), (out / "cells" / cells[1].key)
    metrics = json.loads((old / "eval" / "metrics.json").read_text())
    metrics["suite"]["attacks"][0]["kwargs"] = {"an_older_option": 1}
    (old / "eval" / "metrics.json").write_text(json.dumps(metrics))
    report = build_report(out, SMALL)
    assert report["missing"] == [cells[0].key]
    assert "ran other attack settings than this ib-plugins builds" in caplog.text
    stamps = {p: (p / "cell.json").stat().st_mtime_ns for p in (old, kept)}
    checkpoint = (old / "train" / "checkpoint.pt").stat().st_mtime_ns
    again = run_grid(SMALL, out_dir=out, progress=False)
    assert again["missing"] == []
    assert (kept / "cell.json").stat().st_mtime_ns == stamps[kept]  # reused
    assert (old / "cell.json").stat().st_mtime_ns != stamps[old]  # evaluated again ...
    assert (old / "train" / "checkpoint.pt").stat().st_mtime_ns == checkpoint  # ... without training again
    assert json.loads((old / "eval" / "metrics.json").read_text())["suite"]["attacks"][0]["kwargs"] == {}


def test_paper_numbers_are_shown_beside_ours(tmp_path):
    grid = {**SMALL, "methods": ["pgd-at"], "paper": {"source": "IB-RAR Table I", "rows": GRIDS[
        "ibrar-table1-cifar10"]["paper"]["rows"]}}
    for cell in expand_grid(load_grid(grid)):
        _fake_cell(tmp_path, cell, 0.8, 0.4)
    md = (tmp_path / "report.md").read_text() if build_report(tmp_path, grid) else ""
    assert "| paper: pgd-at | - | 75.02 | 47.32 |" in md and "| paper: pgd-at+ib | - | 76.22 | 50.53 |" in md


def test_the_report_metric_follows_the_grid_then_its_paper_then_its_suite(tmp_path):
    from ib_plugins.reproduce import grid_metric

    assert grid_metric(SMALL) == "accuracy"
    assert grid_metric({**SMALL, "evaluate": {"suite": "entropic", "n": 40}}) == "success_rate"
    assert grid_metric({**SMALL, "paper": {"metric": "accuracy", "rows": {}}, "evaluate": {"suite": "entropic"}}) \
        == "accuracy"
    assert grid_metric("entropic-fmnist-cpu") == "success_rate"
    assert grid_metric("entropic-mnist") == "success_rate"
    grid = {**SMALL, "metric": "success_rate"}
    for cell in expand_grid(load_grid(grid)):
        _fake_cell(tmp_path, cell, 0.8, 0.4)  # success_rate 0.1 in every cell
    report = build_report(tmp_path, grid)
    assert report["metric"] == "success_rate"
    assert all(r["summary"]["fgsm"]["mean"] == pytest.approx(10.0) for r in report["rows"])
    assert "attack success rate (%) over originally correct images" in (tmp_path / "report.md").read_text()


# -- runs: CI-sized grid, resume after a kill, plain commands ----------------------------------------------------


@pytest.mark.slow
def test_the_tiny_digits_grid_runs_from_the_cli(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["reproduce", "digits-tiny", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| digits/digits-cnn/pgd-at+ib | 2 |" in printed and "IB-RAR minus baseline" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["missing"] == [] and len(report["rows"]) == 4 and len(report["pairs"]) == 2
    assert {f.name for f in out.iterdir()} >= {"cells", "grid.json", "report.md", "report.json", "report.html"}
    # every column says what it measured: the attack, its budget and on how many images
    assert set(report["column_info"]) == set(report["columns"])
    assert report["column_info"]["fgsm"].startswith("FGSM, L-inf, eps=") and "images)" in report["column_info"]["fgsm"]
    assert "- fgsm: FGSM, L-inf, eps=" in (out / "report.md").read_text()


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_a_killed_grid_resumes_and_reuses_finished_cells(tmp_path):
    grid_file = tmp_path / "small.json"
    grid_file.write_text(json.dumps(SMALL))
    out = tmp_path / "grid"
    code = f"from ib_plugins.reproduce import run_grid; run_grid({str(grid_file)!r}, out_dir={str(out)!r}, progress=False)"
    child = subprocess.Popen([sys.executable, "-c", code], env=_child_env())
    first = out / "cells" / "digits/digits-cnn/ce/seed0" / "cell.json"
    deadline = time.monotonic() + 240
    try:
        while not first.exists():
            assert child.poll() is None, "the grid finished before it could be interrupted"
            assert time.monotonic() < deadline, "the first cell did not finish in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)  # a hard kill, as a scheduler's time limit would
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    done_at = first.stat().st_mtime_ns
    ckpt = out / "cells" / "digits/digits-cnn/ce/seed0" / "train" / "checkpoint.pt"
    ckpt_at = ckpt.stat().st_mtime_ns
    report = run_grid(grid_file, out_dir=out, progress=False)
    assert report["missing"] == [] and len(report["rows"]) == 2
    assert first.stat().st_mtime_ns == done_at and ckpt.stat().st_mtime_ns == ckpt_at  # reused, not rerun


@pytest.mark.slow
def test_printed_commands_run_cell_by_cell_to_the_same_report(tmp_path):
    grid_file = tmp_path / "small.json"
    grid_file.write_text(json.dumps(SMALL))
    direct = run_grid(grid_file, out_dir=tmp_path / "direct", progress=False)
    script = print_commands(grid_file, out_dir=tmp_path / "plain")
    commands = [line for line in script.splitlines() if line and not line.startswith("#")]
    assert commands[-1].endswith("--report-only")
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "ib-plugins"
        done = subprocess.run([sys.executable, "-m", "ib_plugins.cli", *argv[1:]], capture_output=True, text=True,
                              timeout=300, env=_child_env())
        assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    plain = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert plain["missing"] == []
    for a, b in zip(direct["rows"], plain["rows"]):
        assert a["row"] == b["row"] and a["values"] == b["values"]


# -- archives ----------------------------------------------------------------------------------------------


def test_an_archive_keeps_the_results_without_checkpoints_and_is_itself_a_grid_folder(tmp_path, capsys):
    grid_file = tmp_path / "small.json"
    grid_file.write_text(json.dumps(SMALL))
    out, dest = tmp_path / "grid", tmp_path / "archive"
    dest.mkdir()
    (dest / "NOTES.txt").write_text("mine")  # something the user had there stays untouched
    running = out / "cells" / "digits/digits-cnn/ce/seed7" / "train"  # a cell still training: not archived
    running.mkdir(parents=True)
    (running / "history.json").write_text("[]")
    assert main(["reproduce", str(grid_file), "--out", str(out), "--no-progress", "--archive", str(dest)]) == 0
    assert "Archived" in capsys.readouterr().out
    copied = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert not [p for p in copied if p.endswith((".pt", ".png", ".tmp")) or "seed7" in p]
    cell = "cells/digits/digits-cnn/ce+ib/seed0"
    assert {f"{cell}/cell.json", f"{cell}/eval/metrics.json", f"{cell}/eval/config.json", f"{cell}/train/history.json",
            "grid.json", "report.md", "report.json", "NOTES.txt"} <= copied
    assert (dest / "NOTES.txt").read_text() == "mine"
    # each cell says where it ran: bit-identical floats need the same CPU, threads and versions
    env = json.loads((dest / cell / "cell.json").read_text())["environment"]
    assert {"torch", "python", "cpu", "threads", "device", "ib_plugins"} <= set(env) and env["device"] == "cpu"
    # the report rebuilt from the archive is the grid's report
    original = json.loads((out / "report.json").read_text())
    rebuilt = build_report(dest, grid_file)
    assert rebuilt["missing"] == [] and rebuilt["rows"] == original["rows"] and rebuilt["pairs"] == original["pairs"]
    # resuming on the archive reuses its cells: nothing is trained, no checkpoint appears
    stamp = (dest / cell / "cell.json").stat().st_mtime_ns
    again = run_grid(grid_file, out_dir=dest, progress=False)
    assert again["missing"] == [] and (dest / cell / "cell.json").stat().st_mtime_ns == stamp
    assert not list(dest.rglob("*.pt"))


def test_an_archived_entropic_grid_still_matches_its_cells_where_it_moved(tmp_path):
    # Entropic cells start from their grid's pretraining cell (init_checkpoint = an absolute path into the
    # grid folder); a copy of the archive elsewhere must still count those cells as this grid's.
    from ib_plugins.reproduce import archive_grid

    grid = {"name": "tiny-entropic", "datasets": ["digits"], "models": ["digits-cnn"], "methods": ["entropic"],
            "ib": [False], "seeds": [0], "train": {"epochs": 1, "batch_size": 50, "train_limit": 100},
            "pretrain": {"epochs": 1}, "evaluate": {"suite": "entropic", "n": 20, "attacks": ["fgsm"]}}
    out = tmp_path / "grid"
    original = run_grid(grid, out_dir=out, progress=False)
    assert original["missing"] == []
    assert len(original["rows"]) == 2
    archive_grid(out, tmp_path / "archive")
    moved = tmp_path / "elsewhere" / "archive"
    moved.parent.mkdir()
    (tmp_path / "archive").rename(moved)
    rebuilt = build_report(moved, moved / "grid.json")
    assert rebuilt["missing"] == []
    assert rebuilt["rows"] == original["rows"]
    stamps = {p: p.stat().st_mtime_ns for p in moved.rglob("cell.json")}
    assert len(stamps) == 2
    assert run_grid(moved / "grid.json", out_dir=moved, progress=False)["missing"] == []
    assert {p: p.stat().st_mtime_ns for p in moved.rglob("cell.json")} == stamps  # reused, not retrained
    assert not list(moved.rglob("*.pt"))


def test_archive_errors_name_the_argument(tmp_path):
    from ib_plugins.reproduce import archive_grid

    with pytest.raises(ValueError, match=r"out_dir: expected a grid folder \(with grid.json"):
        archive_grid(tmp_path, tmp_path.parent / "elsewhere")
    (tmp_path / "grid.json").write_text("{}")
    with pytest.raises(ValueError, match="dest: must be outside the grid folder"):
        archive_grid(tmp_path, tmp_path / "inside")
    (tmp_path.parent / "a_file").write_text("x")
    with pytest.raises(ValueError, match="dest: expected a folder, got the file"):
        archive_grid(tmp_path, tmp_path.parent / "a_file")


def test_the_cli_checks_the_archive_before_it_runs_anything(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["reproduce", "digits-tiny", "--out", str(out), "--archive", str(out / "a")]) == 2
    assert "ib-plugins reproduce: error: dest: must be outside the grid folder" in capsys.readouterr().err
    assert not out.exists()
    assert main(["reproduce", "digits-tiny", "--out", str(out), "--print-commands", "--archive",
                 str(tmp_path / "b")]) == 2
    assert "--archive: not with --print-commands" in capsys.readouterr().err
    assert not out.exists()


def test_a_cell_rerun_on_the_same_machine_gives_the_same_numbers(tmp_path):
    # what the README promises: the same seed on the same machine, threads and versions gives the same cell
    grid = {**SMALL, "ib": [True]}
    first = run_grid(grid, out_dir=tmp_path / "a", progress=False)
    second = run_grid(grid, out_dir=tmp_path / "b", progress=False)
    assert first["rows"] and first["rows"] == second["rows"]
    history = [json.loads((tmp_path / d / "cells/digits/digits-cnn/ce+ib/seed0/train/history.json").read_text())
               for d in ("a", "b")]
    assert history[0] == history[1]


ARCHIVES = sorted(p.parent for p in (ROOT / "benchmarks" / "grids").glob("*/grid.json"))


@pytest.mark.skipif(not ARCHIVES, reason="no archived grids under benchmarks/grids (not a source checkout)")
@pytest.mark.parametrize("archive", ARCHIVES, ids=[p.name for p in ARCHIVES])
def test_the_archived_grids_rebuild_to_their_committed_reports(archive, tmp_path):
    # The README's real-data tables come from these folders: a copy elsewhere must give the committed
    # report, every cell present (none from other attack settings or another configuration).
    import shutil

    copy = tmp_path / archive.name
    shutil.copytree(archive, copy)
    rebuilt = build_report(copy, copy / "grid.json")
    assert rebuilt["missing"] == []
    assert rebuilt == json.loads((archive / "report.json").read_text())
    assert (copy / "report.md").read_text() == (archive / "report.md").read_text()
