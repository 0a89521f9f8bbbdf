"""RobustBench submission (issue 14, item 9): the audit's worst case as the entry's ``external``
evaluation and its masking findings as ``unreliable``; ``ib-plugins leaderboard --submission`` filling
RobustBench's new-model issue template; non-standard radii marked in the tables."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn as nn

from ib_plugins.audit import AuditReport, CheckResult
from ib_plugins.cli import main
from ib_plugins.leaderboard import LeaderboardEntry, render_html, render_markdown, robustbench_submission

FAST = dict(version="custom", attacks=["apgd-ce"], attack_options={"apgd": {"n_iter": 5}}, progress=False,
            batch_size=12)


@pytest.fixture
def evaluate_for_leaderboard():
    pytest.importorskip("pyautoattack", reason="pyautoattack (pip install 'ib-plugins[autoattack]') runs AutoAttack")
    from ib_plugins.adapters.robustbench_eval import evaluate_for_leaderboard

    return evaluate_for_leaderboard


def _net_and_data():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
    return net, x, y


def _report(*, accuracy: float, eps: float = 0.1, warn: tuple[str, ...] = (), n: int = 12,
            dataset: str | None = None) -> AuditReport:
    checks = [CheckResult(name, "warn" if name in warn else "pass", "x") for name in ("large-eps", "adaptive")]
    numbers = {"n": n, "eps": eps, "worst_case": {"accuracy": accuracy, "eps": eps, "n": n, "attacks": ["a", "b", "c"],
                                                   "strongest_single": "a", "strongest_single_accuracy": accuracy}}
    return AuditReport(checks, numbers, {"dataset": dataset})


def test_the_audits_worst_case_becomes_external_and_its_masking_warnings_unreliable(
    evaluate_for_leaderboard, tmp_path
):
    net, x, y = _net_and_data()
    plain = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m", **FAST)
    aa = plain.robust_accuracy
    assert plain.unreliable is False and plain.external is None

    masking = _report(accuracy=0.0, warn=("large-eps",))
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m", external=masking,
                                     out_dir=tmp_path, **FAST)
    assert entry.external == "0.0" and entry.best_known_accuracy == 0.0 and entry.robust_accuracy == aa
    assert entry.unreliable is True
    info = entry.ib_plugins["external"]
    assert info["accuracy"] == 0.0 and info["kind"] == "audit" and info["masking_warnings"] == ["large-eps"]
    assert info["source"].startswith("ib-plugins audit: worst case per example over 3 attacks at eps=0.1")
    assert entry.ib_plugins["unreliable_reasons"] == ["ib-plugins audit: masking indicators warn (large-eps)"]
    written = json.loads(entry.path.read_text())
    assert written["external"] == "0.0" and written["unreliable"] is True

    weak_only = _report(accuracy=0.0, warn=("adaptive",))  # a weak attack is no sign of masking
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m", external=weak_only, **FAST)
    assert entry.unreliable is False and entry.external == "0.0"
    assert entry.ib_plugins["external"]["weak_attack_warnings"] == ["adaptive"]

    # an audit that finds fewer adversarial examples than AutoAttack leaves the best known at AutoAttack's
    higher = _report(accuracy=1.0)
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m", external=higher, **FAST)
    assert entry.best_known_accuracy == pytest.approx(aa, abs=1e-4)
    assert entry.ib_plugins["external"]["lower_than_autoattack"] is False


def test_a_number_with_its_source_and_explicit_metadata(evaluate_for_leaderboard):
    net, x, y = _net_and_data()
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m",
                                     external=(0.0, "PGD-1000 with 10 restarts"), **FAST)
    assert entry.external == "0.0" and entry.ib_plugins["external"]["source"] == "PGD-1000 with 10 restarts"
    assert entry.unreliable is False
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m",
                                     external={"accuracy": 0.0, "source": "Square, 5000 queries"}, **FAST)
    assert entry.external == "0.0" and entry.ib_plugins["external"]["kind"] == "given"
    # metadata["unreliable"] is the user's word and wins
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m",
                                     external=_report(accuracy=0.0, warn=("large-eps",)),
                                     metadata={"unreliable": False}, **FAST)
    assert entry.unreliable is False


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"external": _report(accuracy=0.1, eps=0.2)}, ValueError,
         r"external: the audit ran at eps=0\.2, this entry is at eps=0\.1"),
        ({"external": _report(accuracy=0.1), "threat_model": "L2"}, ValueError,
         r"external: the audit attacks in L-inf, but this entry's threat model is 'L2'"),
        ({"external": _report(accuracy=0.1, dataset="cifar10")}, ValueError,
         r"external: the audit ran on dataset 'cifar10', this entry is on 'toy'"),
        ({"external": AuditReport([], {}, {})}, ValueError, r"external: the audit report has no robust accuracy"),
        ({"external": (0.1, "x"), "metadata": {"external": "10.0"}}, ValueError,
         r"external, metadata\['external'\]: expected at most one of them"),
        ({"external": (1.5, "x")}, ValueError, r"external: expected the robust accuracy as a fraction in \[0, 1\], got 1\.5"),
        ({"external": (0.1, "")}, ValueError, r"external: expected where the accuracy comes from"),
        ({"external": {"accuracy": 0.1, "src": "x"}}, ValueError, r"external: unknown key\(s\) \['src'\]"),
        ({"external": 0.1}, TypeError, r"external: expected an AuditReport, an \(accuracy, source\) pair"),
    ],
)
def test_bad_external_is_refused_before_the_attack(evaluate_for_leaderboard, kwargs, error, match, monkeypatch):
    from ib_plugins.adapters import robustbench_eval as rbe

    def never(*args, **kw):
        raise AssertionError("AutoAttack ran")

    monkeypatch.setattr(rbe, "run_autoattack", never)
    net, x, y = _net_and_data()
    with pytest.raises(error, match=match):
        evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m", **{**FAST, **kwargs})


def test_a_real_audit_feeds_the_entry(evaluate_for_leaderboard, tmp_path):
    from ib_plugins.audit import run_audit

    net, x, y = _net_and_data()
    report = run_audit(net, out_dir=tmp_path / "audit", quick=True, x=x, y=y, eps=0.1, surrogate=False,
                       eps_grid=[0.0, 0.1, 0.5], progress=False)
    entry = evaluate_for_leaderboard(net, x, y, dataset="toy", eps=0.1, model_name="m", external=report, **FAST)
    assert entry.best_known_accuracy <= entry.robust_accuracy + 1e-9
    assert entry.best_known_accuracy == pytest.approx(min(report.robust_accuracy, entry.robust_accuracy), abs=1e-4)
    assert entry.unreliable is bool(report.masking_warnings)
    assert entry.ib_plugins["external"]["report"] == str(tmp_path / "audit")


# --------------------------------------------------------------------------------------------------
# The new-model issue
# --------------------------------------------------------------------------------------------------

# The headings and fields of RobustBench's .github/ISSUE_TEMPLATE/new-model.md, in order.
TEMPLATE_LINES = [
    "# Paper Information", "- **Paper Title**:", "- **Paper URL**:", "- **Paper authors**:", "# Leaderboard Claim(s)",
    "## Model 1", "- **Architecture**:", "- **Threat Model**:", "- **eps**:", "- **Clean accuracy**:",
    "- **Robust accuracy**:", "- **Additional data**:", "- **Evaluation method**:", "- **Checkpoint and code**:",
    "# Model Zoo:", "- [ ] I want to add my models to the Model Zoo (check if true)",
    "- [ ] I use an architecture that is **not** included among those",
    "- [ ] I agree to release my model(s) under MIT license (check if true) **OR**",
    "- [ ] I want my models to be released under a custom license",
]


def _entry(**kw) -> LeaderboardEntry:
    fields = dict(model_name="Doe2024Robust", dataset="cifar10", threat_model="Linf", eps=8 / 255, clean_acc="91.2",
                  autoattack_acc="60.1", n=10000, name="Robust Things", link="https://arxiv.org/abs/1234.5678",
                  authors="J. Doe, A. Roe", architecture="WideResNet-28-10", additional_data=False,
                  ib_plugins={"version": "0.9", "autoattack": {"version": "standard",
                                                               "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"]}})
    fields.update(kw)
    return LeaderboardEntry(**fields)


def test_submission_follows_robustbenchs_template():
    text = robustbench_submission(_entry())
    lines = text.splitlines()
    positions = [next(i for i, line in enumerate(lines) if line.startswith(t)) for t in TEMPLATE_LINES]
    assert positions == sorted(positions)
    field = {m.group(1): m.group(2) for m in (re.match(r"- \*\*(.+?)\*\*: (.*)", line) for line in lines) if m}
    assert field == {
        "Paper Title": "Robust Things", "Paper URL": "https://arxiv.org/abs/1234.5678", "Paper authors": "J. Doe, A. Roe",
        "Architecture": "WideResNet-28-10", "Threat Model": "Linf", "eps": "8/255", "Clean accuracy": "91.2%",
        "Robust accuracy": "60.1%", "Additional data": "false",
        "Evaluation method": "standard AutoAttack (apgd-ce, apgd-t, fab-t, square), on 10,000 test examples, evaluated "
                             "with ib-plugins 0.9",
        "Checkpoint and code": field["Checkpoint and code"],
    }
    assert field["Checkpoint and code"].startswith("TODO: ")
    assert "Before submitting:" not in text  # nothing keeps this claim off the leaderboard


def test_submission_says_what_is_missing_and_what_would_keep_it_off_the_leaderboard(tmp_path):
    entry = _entry(eps=0.03, n=200, name="Doe2024Robust", link=None, authors=None, architecture=None,
                   additional_data=None, external="55.0", unreliable=True,
                   ib_plugins={"autoattack": {"version": "custom", "attacks": ["apgd-ce"]},
                               "external": {"source": "ib-plugins audit: worst case per example over 12 attacks"},
                               "unreliable_reasons": ["ib-plugins audit: masking indicators warn (large-eps)"]})
    text = robustbench_submission(entry)
    for todo in ("- **Paper Title**: TODO: ", "- **Paper URL**: TODO: ", "- **Paper authors**: TODO: ",
                 "- **Architecture**: TODO: ", "- **Additional data**: TODO: true/false"):
        assert todo in text, todo
    assert "- **Robust accuracy**: 60.1% (AutoAttack); best known 55.0% (external evaluation)" in text
    assert "best known robust accuracy 55.0% from ib-plugins audit: worst case per example over 12 attacks" in text
    notes = text.split("\n\n")[0]
    assert "evaluated on 200 examples; RobustBench evaluates the first 10,000 test points" in notes
    assert "eps = 0.03 is not RobustBench's 8/255 for cifar10 Linf" in notes
    assert "AutoAttack version custom, not the standard version" in notes
    assert "marked potentially unreliable (ib-plugins audit: masking indicators warn (large-eps))" in notes
    assert "RobustBench has no leaderboard for the dataset digits" in robustbench_submission(_entry(dataset="digits",
                                                                                                    eps=0.1))


def test_submission_escapes_the_entrys_fields():
    from test_markdown_safety import EVIL, assert_inert

    entry = _entry(name=EVIL, authors=EVIL, architecture=EVIL, link="javascript:alert(1)", footnote=EVIL,
                   ib_plugins={"autoattack": {"version": EVIL, "attacks": [EVIL]}, "version": EVIL,
                               "external": {"source": EVIL}, "unreliable_reasons": [EVIL]},
                   external="1.0", unreliable=True)
    text = robustbench_submission(entry)
    assert_inert(text)
    assert "- **Paper URL**: TODO: " in text


def test_leaderboard_submission_command(tmp_path, capsys):
    path = tmp_path / "model_info" / "cifar10" / "Linf" / "Doe2024Robust.json"
    _entry().to_json(path)
    assert main(["leaderboard", "--submission", str(path)]) == 0
    printed = capsys.readouterr().out
    assert printed == robustbench_submission(_entry())
    target = tmp_path / "issue.md"
    assert main(["leaderboard", "--submission", str(path), "--out", str(target)]) == 0
    assert target.read_text() == printed and f"Written: {target}" in capsys.readouterr().out
    assert main(["leaderboard", "--submission", str(path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "robustbench-new-model-Doe2024Robust.md").read_text() == printed


# --------------------------------------------------------------------------------------------------
# Non-standard radii in the tables
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "threat", "eps", "marked"),
    [
        ("cifar10", "Linf", 8 / 255, False), ("cifar10", "Linf", "8/255", False), ("cifar10", "Linf", 4 / 255, True),
        ("cifar10", "L2", 0.5, False), ("cifar10", "L2", 0.25, True), ("cifar100", "Linf", 8 / 255, False),
        ("cifar100", "Linf", 0.03, True), ("imagenet", "Linf", 4 / 255, False), ("digits", "Linf", 0.1, False),
        ("cifar10", "Linf", None, False),
    ],
)
def test_non_standard_radii_are_marked(dataset, threat, eps, marked):
    e = LeaderboardEntry(model_name="m", dataset=dataset, threat_model=threat, eps=eps, clean_acc="90",
                         autoattack_acc="50")
    assert e.nonstandard_eps is marked
    md, page = render_markdown([e]), render_html([e])
    assert ("**m** (non-standard eps)" in md) is marked
    assert ("entries marked non-standard are evaluated at eps" in md) is marked
    assert ('class="nonstandard"' in page) is marked
    assert ("not comparable with RobustBench&#x27;s leaderboard" in page or "not comparable with RobustBench's "
            "leaderboard" in page) is marked


def test_the_note_names_the_radius_and_the_standard():
    entries = [LeaderboardEntry(model_name="a", dataset="cifar10", threat_model="Linf", eps=0.03, clean_acc="90",
                                autoattack_acc="50"),
               LeaderboardEntry(model_name="b", dataset="cifar10", threat_model="Linf", eps="8/255", clean_acc="90",
                                autoattack_acc="40")]
    md = render_markdown(entries)
    assert ("**Note:** entries marked non-standard are evaluated at eps = 0.03, not at RobustBench's 8/255 for cifar10 "
            "Linf") in md
    assert "| **b** |" in md and "**a** (non-standard eps)" in md
    page = render_html(entries)
    assert "non-standard &epsilon; = 0.03 (RobustBench: 8/255)" in page
