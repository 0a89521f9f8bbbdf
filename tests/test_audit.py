"""Gradient-masking audit (ib_plugins.audit): the checks, the report folder, planted masking vs an honest model."""

from __future__ import annotations

import argparse
import json
import time

import pytest
import torch
import torch.nn as nn

from ib_plugins import audit
from ib_plugins.audit import (
    CHECKS,
    AuditReport,
    CheckResult,
    add_audit_arguments,
    audit_command,
    default_eps_grid,
    run_audit,
)
from ib_plugins.training import CheckpointError

pytest.importorskip("torchattacks", reason="the audit runs torchattacks' Square and CW")

#: The quick audit must finish within this many seconds per digits model on 2 CPU cores (CI budget).
QUICK_AUDIT_BUDGET_S = 300


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


# -- the checks as pure functions ----------------------------------------------------------------------


def test_check_results_pass_warn_skip_with_numbers():
    assert audit.check_monotone_eps([0, 0.1, 0.2], [0.9, 0.5, 0.52], tol=0.03).status == "pass"
    warn = audit.check_monotone_eps([0, 0.1, 0.2, 0.3], [0.9, 0.5, 0.2, 0.4], tol=0.03)
    assert warn.status == "warn" and warn.numbers["worst_rise"] == pytest.approx(0.2) and warn.numbers["at_eps"] == 0.3
    assert audit.check_large_eps([0.1, 0.5], [0.3, 0.04], zero_tol=0.05).status == "pass"
    assert audit.check_large_eps([0.1, 0.5], [0.3, 0.06], zero_tol=0.05).status == "warn"
    assert "add a large one" in audit.check_large_eps([0.01, 0.1], [0.3, 0.2]).message
    assert audit.check_unbounded({"pgd": 0.99, "cw": 0.2}, success_tol=0.02).status == "pass"
    assert audit.check_unbounded({"pgd": 0.95, "cw": 0.2}, success_tol=0.02).status == "warn"
    assert audit.check_unbounded({"pgd": None}).status == "skip"
    assert audit.check_iterative(0.52, 0.5, tol=0.03).status == "pass"
    assert audit.check_iterative(0.54, 0.5, tol=0.03).status == "warn"
    steps = audit.check_steps_restarts([1, 10, 20], [0.6, 0.4, 0.45], restarts=3, restart_accuracy=0.4,
                                 single_accuracy=0.4, tol=0.03)
    assert steps.status == "warn" and steps.numbers["at_steps"] == 20
    restarts = audit.check_steps_restarts([1, 10], [0.6, 0.4], restarts=3, restart_accuracy=0.5, single_accuracy=0.4)
    assert restarts.status == "warn" and "restarts raise accuracy" in restarts.message
    assert audit.check_black_box(0.38, 0.4, tol=0.03).status == "pass"
    assert audit.check_black_box(0.3, 0.4, tol=0.03).status == "warn"
    assert audit.check_transfer(0.3, 0.4).status == "warn"
    assert audit.check_transfer(None, 0.4, reason="r").message == "r"
    assert audit.check_adaptive({"pgd-ib": 0.5, "pgd-ib (mean CE)": 0.6}, 0.48).status == "pass"
    assert audit.check_adaptive({"pgd-ib": 0.55}, 0.48).status == "warn"
    assert audit.check_adaptive({}, 0.48).status == "skip"
    assert audit.check_loss_functions(0.3, 0.4).status == "warn"
    assert audit.check_determinism(True, eot_samples=8).status == "pass"
    assert "NOT deterministic" in audit.check_determinism(False, eot_samples=8).message
    with pytest.raises(ValueError, match=r"tol: expected a number in \[0, 1\]"):
        audit.check_iterative(0.1, 0.2, tol=2)
    with pytest.raises(ValueError, match="status: expected one of"):
        CheckResult("x", "maybe", "")


def test_report_verdict_markdown_and_self_contained_html():
    report = AuditReport(
        [CheckResult("large-eps", "warn", "accuracy 40% at eps 0.5"), CheckResult("transfer", "skip", "no surrogate"),
         CheckResult("iterative-vs-single-step", "pass", "PGD 1% vs FGSM 5%")],
        {"attacks": {"pgd": {"threat": "L-inf", "accuracy": 0.4, "success_rate": 0.6, "seconds": 1.0}}},
        {"target": "m.pt"},
    )
    assert report.verdict == "warn" and report.warned == ["large-eps"]
    md = report.to_markdown().splitlines()
    assert md[0] == "# Gradient-masking audit: m.pt" and md[2].startswith("**WARN: 1 of 2 applicable checks warn")
    assert md[4].startswith("- WARN  **Accuracy reaches ~0 at a large eps**")
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "WARN" in page
    assert "<script" not in page and "<link" not in page and "src='http" not in page and 'src="http' not in page
    assert json.loads(json.dumps(report.to_dict()))["verdict"] == "warn"
    with pytest.raises(ValueError, match="expected one of 'large-eps'"):
        report["nope"]


def test_default_eps_grid_and_bad_grids():
    assert default_eps_grid(0.1, quick=True) == [0.0, 0.05, 0.1, 0.2, 0.5]
    assert default_eps_grid(0.03) == [0.0, 0.0075, 0.015, 0.03, 0.06, 0.09, 0.5]
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    for grid in ([0.1, 0.05, 0.5], [0.1, 0.1, 0.5], [0.0, 1.5], [0.1]):
        with pytest.raises(ValueError, match="eps_grid: expected"):
            run_audit(net, out_dir=None, quick=True, x=x, y=y, eps=0.1, eps_grid=grid, surrogate=False, progress=False)


def test_surrogate_with_another_number_of_classes_is_refused(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    other = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    with pytest.raises(ValueError, match="surrogate: expected a model with 3 outputs .* got 4"):
        run_audit(net, out_dir=tmp_path / "a", quick=True, x=x, y=y, eps=0.1, surrogate=other, progress=False)
    assert not (tmp_path / "a").exists()  # nothing written before the inputs were checked


def test_missing_data_and_cli_errors(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with pytest.raises(ValueError, match="x, y: expected test data"):
        run_audit(net, out_dir=None, quick=True, eps=0.1, progress=False)
    args = add_audit_arguments(argparse.ArgumentParser()).parse_args([str(tmp_path / "none.pt"), "--quick"])
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        audit_command(args)
    with pytest.raises(SystemExit):
        add_audit_arguments(argparse.ArgumentParser()).parse_args(["c.pt", "--eps-grid", "0,a"])


def test_small_audit_writes_every_file_and_leaves_no_trace(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).train()
    x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
    state = torch.get_rng_state()
    report = run_audit(net, out_dir=tmp_path, quick=True, x=x, y=y, eps=0.1, surrogate=net, progress=False)
    assert torch.equal(state, torch.get_rng_state()) and net.training
    assert [c.name for c in report.checks] == list(CHECKS)
    assert report["adaptive"].status == "skip" and report["transfer"].status != "skip"
    for name in ("audit.md", "audit.html", "audit.json", "config.json", "accuracy_vs_eps.png", "accuracy_vs_steps.png"):
        assert (tmp_path / name).is_file(), name
    data = json.loads((tmp_path / "audit.json").read_text())
    assert data["numbers"]["eps_curve"]["eps"] == [0.0, 0.05, 0.1, 0.2, 0.5]
    assert {"pgd eps=0.1", "fgsm", "square", "cw-l2 (corrected)", "cw (torchattacks)", "transfer"} <= set(
        data["numbers"]["attacks"])
    assert "data:image/png;base64," in (tmp_path / "audit.html").read_text()
    # the same folder with other settings is refused
    from ib_plugins.training import RunExistsError

    with pytest.raises(RunExistsError):
        run_audit(net, out_dir=tmp_path, quick=True, x=x, y=y, eps=0.2, surrogate=False, progress=False)


def test_stochastic_eval_forward_is_reported_and_attacked_with_eot(tmp_path):
    from ib_plugins.baselines import VIBClassifier

    torch.manual_seed(0)
    model = VIBClassifier(nn.Flatten(), 16, 3, k=4, eval_mode="sample_average", num_samples_eval=2)
    x, y = torch.rand(10, 1, 4, 4), torch.arange(10) % 3
    report = run_audit(model, out_dir=tmp_path, quick=True, x=x, y=y, eps=0.1, surrogate=False, eot_samples=2,
                       progress=False)
    assert report["deterministic"].status == "warn"
    assert report.numbers["eot_samples"] == 2 and report.numbers["deterministic"] is False
    assert "not deterministic" in (tmp_path / "audit.md").read_text()


def test_adaptive_attacks_run_for_ib_and_entropic_configurations():
    from ib_plugins import wrap_model

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    model = wrap_model(net, ib_layers=["2"], num_classes=3)
    x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
    report = run_audit(model, out_dir=None, quick=True, x=x, y=y, eps=0.1, surrogate=False, progress=False,
                       entropic_config={"layers": ["2"], "reference": 0.5})
    accs = report["adaptive"].numbers["adaptive_accuracy"]
    assert set(accs) == {"pgd-ib", "pgd-ib (mean CE)", "pgd-entropic", "pgd-entropic(+)"}
    assert report.numbers["ib_config"]["layers"] == ["2"] and report["adaptive"].status in ("pass", "warn")
    assert model.num_records == 0


# -- planted gradient masking vs an honest model (digits) ----------------------------------------------


class RoundInput(nn.Module):
    """``round(4x)/4`` at the input: no straight-through estimator, so every input gradient is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 4) / 4


@pytest.fixture(scope="module")
def digits_checkpoints(tmp_path_factory):
    """A quickly trained honest CE DigitsCNN and an IB-RAR one (robust layers + code mask), as the demo."""
    from ib_plugins.training import TrainConfig, Trainer

    out = {}
    for name, cfg in (
        ("ce", TrainConfig(epochs=4, batch_size=50, seed=0)),
        ("ib-rar", TrainConfig(epochs=4, batch_size=50, seed=0, ib=True, ib_layers="robust", mask="code")),
    ):
        folder = tmp_path_factory.mktemp(name)
        Trainer(cfg, out_dir=folder, progress=False).fit()
        out[name] = folder / "checkpoint.pt"
    return out


def _quick_cli(checkpoint, out) -> tuple[dict, float]:
    args = add_audit_arguments(argparse.ArgumentParser()).parse_args(
        [str(checkpoint), "--quick", "--out", str(out), "--no-progress"])
    start = time.perf_counter()
    assert audit_command(args) == 0
    return json.loads((out / "audit.json").read_text()), time.perf_counter() - start


@pytest.mark.slow
def test_honest_digits_model_passes_the_quick_audit_in_time(digits_checkpoints, tmp_path, capsys):
    report, seconds = _quick_cli(digits_checkpoints["ce"], tmp_path / "audit")
    assert seconds < QUICK_AUDIT_BUDGET_S
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses.pop("adaptive") == "skip"  # a CE model has no IB configuration
    assert set(statuses.values()) == {"pass"}, report["summary"]
    assert report["verdict"] == "pass"
    assert "PASS: all 9 applicable checks pass" in capsys.readouterr().out


@pytest.mark.slow
def test_ibrar_digits_model_quick_audit_in_time_with_pgd_ib(digits_checkpoints, tmp_path):
    report, seconds = _quick_cli(digits_checkpoints["ib-rar"], tmp_path / "audit")
    assert seconds < QUICK_AUDIT_BUDGET_S
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["adaptive"]["status"] == "pass", checks["adaptive"]["message"]
    assert set(checks["adaptive"]["numbers"]["adaptive_accuracy"]) == {"pgd-ib", "pgd-ib (mean CE)"}
    assert report["numbers"]["ib_config"]["layers"] == ["conv3", "fc1"]


@pytest.mark.slow
def test_planted_gradient_masking_is_flagged(digits_checkpoints, tmp_path):
    from ib_plugins.data import load_dataset
    from ib_plugins.training import load_model_from_checkpoint

    honest, _, _ = load_model_from_checkpoint(digits_checkpoints["ce"])
    masked = nn.Sequential(RoundInput(), honest).eval()
    x, y = load_dataset("digits", split="test", limit=100, seed=0).tensors
    report = run_audit(masked, out_dir=tmp_path, quick=True, x=x, y=y, dataset="digits", surrogate=honest,
                       progress=False)
    assert report.verdict == "warn"
    # zero gradients: PGD cannot move, so a large eps / an unbounded budget does not reach ~0 accuracy,
    # and black-box or transferred examples do better than "white-box" PGD
    assert {"large-eps", "unbounded"} <= set(report.warned), report.to_markdown()
    assert report.numbers["pgd"]["accuracy"] >= report.numbers["clean_accuracy"] - 0.05  # PGD looks "robust"
    assert "WARN" in (tmp_path / "audit.md").read_text().splitlines()[2]


# -- masking indicators vs a weak attack; the worst case over every attack --------------------------------


def test_checks_are_masking_indicators_except_the_adaptive_one():
    from ib_plugins.audit import CHECK_KINDS, CHECKS

    assert set(CHECK_KINDS) == set(CHECKS)
    assert [n for n, kind in CHECK_KINDS.items() if kind == "weak-attack"] == ["adaptive"]


def test_a_weak_adaptive_attack_is_not_headlined_as_gradient_masking():
    checks = [CheckResult("large-eps", "pass", "0% at eps 0.5"), CheckResult("transfer", "skip", "no surrogate"),
              CheckResult("adaptive", "warn", "pgd-ib 60% vs PGD 50%: the adaptive attack is weaker")]
    numbers = {"worst_case": {"accuracy": 0.45, "eps": 0.1, "n": 100, "attacks": ["pgd", "pgd-ib"],
                              "strongest_single": "pgd", "strongest_single_accuracy": 0.5}}
    report = AuditReport(checks, numbers, {"target": "m.pt"})
    assert report.verdict == "weak-attack" and report.warned == ["adaptive"]
    assert report.masking_warnings == [] and report.weak_attack_warnings == ["adaptive"]
    summary = report.summary()
    assert summary.startswith("PASS on the 1 applicable masking check") and "gradient masking)" not in summary
    assert "overestimated" not in summary and "Weak attack: adaptive" in summary
    assert "Robust accuracy: 45.0% (worst case over 2 attacks at eps=0.1)" in summary
    md = report.to_markdown()
    assert "_(attack strength, not masking)_" in md
    data = json.loads(json.dumps(report.to_dict()))
    assert data["verdict"] == "weak-attack" and data["robust_accuracy"] == 0.45
    assert "weak-attack" in report.to_html() or "#8250df" in report.to_html()
    # with a masking indicator as well, the masking headline comes first and the weak attack is added
    both = AuditReport([CheckResult("large-eps", "warn", "40% at eps 0.5"), *checks[1:]], numbers, {})
    assert both.verdict == "warn" and both.masking_warnings == ["large-eps"]
    assert both.summary().startswith("WARN: 1 of 2 applicable checks warn (large-eps): signs of gradient masking")
    assert "Weak attack: adaptive" in both.summary()


def test_robust_accuracy_is_the_per_sample_worst_case_over_the_main_eps_attacks(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.rand(24, 1, 4, 4), torch.arange(24) % 3
    report = run_audit(net, out_dir=tmp_path, quick=True, x=x, y=y, eps=0.1, surrogate=False, progress=False)
    worst = report.numbers["worst_case"]
    attacks = report.numbers["attacks"]
    assert set(worst["attacks"]) >= {"pgd eps=0.1", "fgsm", "square", "pgd-margin", "pgd 3 restarts"}
    assert not any(k in worst["attacks"] for k in ("pgd eps=0.5", "pgd eps=1 (unbounded)", "cw-l2 (corrected)"))
    assert report.robust_accuracy == worst["accuracy"]
    assert report.robust_accuracy <= min(attacks[k]["accuracy"] for k in worst["attacks"]) + 1e-12
    assert worst["strongest_single_accuracy"] == min(attacks[k]["accuracy"] for k in worst["attacks"])
    assert "Robust accuracy" in report.summary() and "Robust accuracy at eps 0.1" in (tmp_path / "audit.md").read_text()
    assert json.loads((tmp_path / "audit.json").read_text())["robust_accuracy"] == report.robust_accuracy


@pytest.mark.slow
def test_deliberately_weakened_adaptive_attack_is_reported_as_a_weak_attack(digits_checkpoints, tmp_path):
    # pgd-ib whose objective is dominated by alpha * nHSIC(T, X) (beta = 0): its signed steps follow a
    # term unrelated to the label, so it is far weaker than plain PGD on a model that masks nothing.
    ib_config = {"layers": ["conv3", "fc1"], "alpha": 1e4, "beta": 0.0, "y_kernel": "linear"}
    report = run_audit(digits_checkpoints["ib-rar"], out_dir=tmp_path, quick=True, ib_config=ib_config,
                       progress=False)
    assert report["adaptive"].status == "warn", report["adaptive"].message
    assert report.masking_warnings == [], report.to_markdown()
    assert report.verdict == "weak-attack"
    first = (tmp_path / "audit.md").read_text().splitlines()[2]
    assert first.startswith("**PASS on the") and "Weak attack: adaptive" in first and "overestimated" not in first
    # the worst case still takes the strongest attack, so the weak one cannot inflate the robust accuracy
    assert report.robust_accuracy <= report.numbers["pgd"]["accuracy"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"device": "meta"}, "device"), ({"device": "gpu"}, "device"), ({"surrogate_epochs": 0}, "surrogate_epochs"),
])
def test_bad_device_and_surrogate_epochs_are_refused_before_anything_runs(tmp_path, kwargs, match):
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    with pytest.raises(ValueError, match=match):
        run_audit(net, out_dir=tmp_path / "a", quick=True, x=x, y=y, eps=0.1, progress=False, **kwargs)
    assert not (tmp_path / "a").exists()
