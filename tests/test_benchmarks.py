"""The benchmark command (benchmarks/run.py): it runs, writes its files, and reports sane ratios.

Speed targets are never asserted here: the CI machine is shared and noisy. The ``--quick`` run checks
that every section runs end to end and that the outputs have the documented shape.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "run.py"
TIMEOUT_S = 240

# Rows every --quick run must produce (quick sizes: VGG-16 at batch 8, digits CNN, [100, 64, 1, 1] mask).
EXPECTED_ROWS = [
    "a.vgg16.ce",
    "a.vgg16.ib_robust",
    "a.vgg16.ib_all",
    "a.vgg16.ib_all_mask",
    "a.vgg16.ib_all_mask_every10",
    "a.digits.ce",
    "a.digits.ib_robust",
    "a.digits.ib_all",
    "a.digits.ib_all_mask",
    "a.digits.ib_all_mask_every10",
    "b.digits.pgd_at",
    "b.digits.pgd_at_ib_robust",
    "b.digits.pgd_at_ib_all",
    "c.mask_64x1x1.vectorised",
    "c.mask_64x1x1.loop",
    "c.mask_64x1x1.speedup",
    "c.mask_64x1x1.fraction_of_vgg16_step",
    "c.mask_64x1x1_x10.vectorised",
    "c.mask_64x1x1_x10.speedup",
    "d.vgg16.ce",
    "d.vgg16.ib_robust",
    "d.vgg16.ib_all",
    "d.digits.ce",
    "d.digits.ib_all",
    "e.digits.pgd",
    "e.digits.fgsm",
    "e.digits.total",
    "e.digits.own_cost",
]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # Module-scoped callers run before the per-test fixture that points TMPDIR into pytest's root.
    scratch = out.parent / f"{out.name}-tmp"
    scratch.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        env=dict(os.environ, TMPDIR=str(scratch)),
    )


def _load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ib_plugins_benchmark_run", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench_quick")
    return _run(out), out


@pytest.mark.slow
def test_quick_run_exits_zero_and_prints_machine_and_table(quick_run) -> None:
    proc, _ = quick_run
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "torch " + torch.__version__ in proc.stdout
    assert "CPUs:" in proc.stdout
    assert "| measurement | time / memory | ratio to baseline | target | pass/fail |" in proc.stdout
    assert "section (a) starts" in proc.stderr  # progress lines go to stderr


@pytest.mark.slow
def test_quick_run_writes_results_json_with_expected_keys(quick_run) -> None:
    proc, out = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text())
    for key in ("schema_version", "machine", "config", "measurements", "ratios", "targets", "checks", "total_seconds"):
        assert key in data, key
    for key in ("processor", "cpu_count", "torch", "device", "device_name", "load_average_start"):
        assert key in data["machine"], key
    assert data["config"]["quick"] is True
    missing = [k for k in EXPECTED_ROWS if k not in data["measurements"]]
    assert not missing, missing
    for key, row in data["measurements"].items():
        assert row["kind"] in ("time", "memory", "derived"), key
        assert row["value"] is not None and math.isfinite(row["value"]), (key, row["value"])
        if key.endswith(".own_cost"):
            # A paired difference of two small times: it may come out slightly negative.
            assert abs(row["value"]) < 0.5 * data["measurements"]["e.digits.pgd_direct"]["value"], row["value"]
            assert len(row["samples"]) == 3 * data["config"]["repeats"], key
            continue
        assert row["value"] > 0, (key, row["value"])
        if row["samples"] is not None:
            assert len(row["samples"]) == data["config"]["repeats"], key


@pytest.mark.slow
def test_quick_run_ratios_are_finite_and_positive(quick_run) -> None:
    _, out = quick_run
    data = json.loads((out / "results.json").read_text())
    ratios = data["ratios"]
    for key in ("a.vgg16.ib_all", "a.vgg16.ib_robust", "a.vgg16.ib_all_mask_every10", "c.mask_64x1x1.speedup",
                "c.mask_64x1x1.fraction_of_vgg16_step", "d.vgg16.ib_all", "e.digits.pgd", "e.digits.fgsm"):
        assert key in ratios, key
    for key, value in ratios.items():
        assert isinstance(value, float | int) and math.isfinite(value) and value > 0, (key, value)
    # Quick sizes are not the targets' sizes: no pass/fail verdict is given.
    assert all(t["pass"] is None for t in data["targets"].values())
    # Sanity checks recorded by the run (properties, not speed).
    checks = data["checks"]
    assert checks["c.mask_64x1x1.selection_agrees"] is True
    assert checks["c.mask_64x1x1_x10.selection_agrees"] is True  # large activations: dense float64 path
    assert checks["a.vgg16.masked_every_step"] is True
    assert checks["e.digits.pgd.same_accuracy"] is True
    assert checks["e.digits.fgsm.same_accuracy"] is True


@pytest.mark.slow
def test_quick_run_writes_markdown_table(quick_run) -> None:
    _, out = quick_run
    md = (out / "results.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert lines[0] == "| measurement | time / memory | ratio to baseline | target | pass/fail |"
    assert lines[1].startswith("|---")
    data = json.loads((out / "results.json").read_text())
    assert len(lines) == 2 + len(data["measurements"])
    assert any("<= 1.03" in line for line in lines)
    assert any("(d) vgg16" in line and "MiB" in line for line in lines)


@pytest.mark.slow
def test_cuda_request_without_cuda_falls_back_to_cpu(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here, so --device cuda does not fall back to the CPU")
    proc = _run(tmp_path, "--device", "cuda", "--sections", "c")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--device cuda was requested but CUDA is not available" in proc.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["machine"]["requested_device"] == "cuda"
    assert data["machine"]["device"] == "cpu"
    assert "c.mask_64x1x1.speedup" in data["ratios"]


def test_bad_sections_and_repeats_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _load_module()
    with pytest.raises(SystemExit) as err:
        bench.parse_args(["--sections", "az"])
    assert err.value.code == 2
    assert "--sections: expected letters from 'abcde', got 'az'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args(["--repeats", "0"])
    assert "--repeats: expected an int >= 1, got 0" in capsys.readouterr().err
    args = bench.parse_args(["--quick"])
    assert (args.repeats, args.warmup) == (1, 0)
    args = bench.parse_args([])
    assert (args.repeats, args.warmup) == (5, 1)


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    bench = _load_module()
    assert bench.paired_ratio([2.0, 3.0, 10.0], [1.0, 3.0, 2.0]) == 2.0


def test_loop_selection_matches_vectorised_select_channels() -> None:
    from ib_plugins import select_channels

    bench = _load_module()
    g = torch.Generator().manual_seed(0)
    feats = torch.relu(torch.randn(24, 12, 2, 2, generator=g))
    x = torch.rand(24, 1, 8, 8, generator=g)
    y = torch.arange(24) % 10
    vec = select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=2, k_high_x=2)
    loop = bench.loop_select(feats, x, y, k_low_y=2, k_high_x=2)
    assert torch.equal(vec, loop)


def test_targets_are_not_judged_at_quick_sizes_or_gpu_only_on_cpu() -> None:
    bench = _load_module()
    quick = bench.Results(quick=True, device=torch.device("cpu"))
    quick.add("a.vgg16.ib_all", "x", kind="time", value=1.0, ratio=1.5)
    assert quick.rows["a.vgg16.ib_all"]["pass"] is None
    full = bench.Results(quick=False, device=torch.device("cpu"))
    full.add("a.vgg16.ib_all", "x", kind="time", value=1.0, ratio=1.01)
    full.add("a.vgg16.ib_robust", "x", kind="time", value=1.0, ratio=1.02)
    full.add("c.mask_512x1x1.speedup", "x", kind="derived", value=1.0, ratio=20.0)
    full.add("a.vgg16.ib_all_mask_every10", "x", kind="derived", value=1.0, ratio=1.01)
    assert full.rows["a.vgg16.ib_all"]["pass"] is True
    assert full.rows["a.vgg16.ib_robust"]["pass"] is False
    assert full.rows["c.mask_512x1x1.speedup"]["pass"] is True
    assert full.rows["a.vgg16.ib_all_mask_every10"]["pass"] is None  # GPU-only target
    md = full.markdown()
    assert "| PASS |" in md and "| FAIL |" in md and "(GPU only)" in md


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on machines without CUDA")
def test_device_check_without_cuda_says_so_and_exits_2(tmp_path):
    script = ROOT / "benchmarks" / "device_check.sh"
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable})
    assert done.returncode == 2
    assert "device_check: no CUDA device here" in done.stderr and "run this script on a machine with an NVIDIA GPU" in done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--device", "cuda", "--out",
                           str(tmp_path / "gs")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no CUDA device" in done.stderr
