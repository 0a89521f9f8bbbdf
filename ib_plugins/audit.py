"""Gradient-masking audit: is a model's measured robustness real (Carlini et al. 2019, §5 checklist)?

A defence can look robust because its gradients are useless to the attacker (shattered,
stochastic or vanishing gradients; Athalye et al. 2018), not because adversarial examples are
absent. :func:`run_audit` runs the sanity checks of Carlini et al., "On Evaluating Adversarial
Robustness" (2019), on a checkpoint or a model and writes a report folder. Each check returns
``pass``, ``warn`` (with its numbers) or ``skip`` (not applicable, with the reason):

* ``deterministic``: the eval forward gives the same output twice; otherwise the report says so
  and every attack runs with EOT (:class:`~ib_plugins.adaptive.EOTModel`).
* ``monotone-eps``: PGD robust accuracy does not rise (beyond ``tol``) as ε grows.
* ``large-eps``: at the largest ε of the grid (0.5 by default) accuracy is ≈ 0 (≤ ``zero_tol``).
* ``unbounded``: an unbounded attack (PGD with ε = 1, and the corrected CW-L2) reaches ≈ 100 %
  success (≥ ``1 − success_tol`` of the originally correct samples).
* ``iterative-vs-single-step``: PGD accuracy ≤ FGSM accuracy + ``tol``.
* ``steps-restarts``: more PGD steps, and random restarts, do not raise accuracy beyond ``tol``.
* ``black-box``: Square (torchattacks, score-based) does not beat PGD: accuracy ≥ PGD − ``tol``.
* ``transfer``: PGD examples from an undefended surrogate (trained quickly with CE, or given) do
  not beat white-box PGD: accuracy ≥ PGD − ``tol``.
* ``adaptive``: the strongest defence-aware attack (``pgd-ib`` with summed and with batch-mean CE
  for IB models, ``pgd-entropic`` in both penalty directions for entropic retraining) is at least as
  strong as plain PGD: accuracy ≤ PGD + ``tol``. All variants are reported.
* ``loss-functions``: PGD on the (corrected) margin loss does not beat PGD on CE by more than
  ``tol`` (a saturated softmax hides the CE gradient, not the margin's).

PGD here is :func:`ib_plugins.adaptive.run_adaptive_attack` (``pgd-ce``: Madry PGD with step
``2.5·ε/steps``, random start, any-iterate success). The report also lists torchattacks' CW beside
the corrected CW-L2 (spec §2.7 item 11). A ``warn`` is a reason to look closer, not a proof of
masking; a full ``pass`` is no proof of robustness either (Carlini et al. §5).

The checks are of two kinds (:data:`CHECK_KINDS`) and the report headlines them differently: a
warning of a **masking indicator** (every check but ``adaptive``) says the model may mislead
gradient-based attacks, so its robustness may be overestimated (verdict ``"warn"``); a warning of a
**weak-attack** check (``adaptive``: the defence-aware attack is weaker than plain PGD) says
something about the *attack*, not the model (verdict ``"weak-attack"`` when it is the only kind).
The audit's **robust accuracy** is the worst case over every attack it ran at the main ε: a sample
counts as robust only if it is classified correctly before and after each of them
(:attr:`AuditReport.robust_accuracy`).

Output folder: ``audit.md`` (summary and one line per check at the top), ``audit.html`` (the same,
self-contained: inline CSS, images as data URIs), ``accuracy_vs_eps.png``,
``accuracy_vs_steps.png``, ``audit.json`` (every number) and ``config.json``.

Example:
    >>> c = check_monotone_eps([0.0, 0.1, 0.2], [0.9, 0.5, 0.6], tol=0.03)
    >>> c.status, c.numbers["worst_rise"]
    ('warn', 0.1)
    >>> check_iterative(0.2, 0.5, tol=0.03).status
    'pass'
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins._markdown import md_cell, md_json, md_text
from ib_plugins._types import PathLike

__all__ = [
    "STATUSES",
    "CHECKS",
    "CHECK_KINDS",
    "VERDICTS",
    "CheckResult",
    "AuditReport",
    "check_determinism",
    "check_monotone_eps",
    "check_large_eps",
    "check_unbounded",
    "check_iterative",
    "check_steps_restarts",
    "check_black_box",
    "check_transfer",
    "check_adaptive",
    "check_loss_functions",
    "default_eps_grid",
    "train_surrogate",
    "run_audit",
    "add_audit_arguments",
    "add_model_factory_arguments",
    "audit_command",
]

logger = logging.getLogger(__name__)

#: The possible outcomes of a check.
STATUSES = ("pass", "warn", "skip")

#: Check name -> title, in report order.
CHECKS: Mapping[str, str] = {
    "deterministic": "Eval forward is deterministic",
    "monotone-eps": "Accuracy falls monotonically with eps",
    "large-eps": "Accuracy reaches ~0 at a large eps",
    "unbounded": "Unbounded attack reaches ~100% success",
    "iterative-vs-single-step": "Iterative attack at least as strong as single-step",
    "steps-restarts": "More steps / restarts do not raise accuracy",
    "black-box": "Black-box (Square) does not beat white-box PGD",
    "transfer": "Transfer from an undefended surrogate does not beat white-box PGD",
    "adaptive": "Adaptive attack at least as strong as plain PGD",
    "loss-functions": "Margin-loss PGD does not beat CE PGD",
}

#: Check name -> ``"masking"`` (a warning is a sign of gradient masking: the model misleads the
#: attacks) or ``"weak-attack"`` (a warning says the attack is weak, not the model).
CHECK_KINDS: Mapping[str, str] = {name: "weak-attack" if name == "adaptive" else "masking" for name in CHECKS}

#: The audit's possible verdicts: no check warns; a masking indicator warns; only weak-attack checks warn.
VERDICTS = ("pass", "warn", "weak-attack")


def _pct(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one audit check.

    Attributes:
        name: the check's key (see :data:`CHECKS`).
        status: ``"pass"``, ``"warn"`` or ``"skip"``.
        message: one line with the numbers behind the verdict.
        numbers: every number the check used (JSON-serialisable).
        tolerance: the tolerance applied (None where none applies).

    Example:
        >>> CheckResult("large-eps", "pass", "accuracy 0.0% at eps 0.5").line()
        '- PASS  **Accuracy reaches ~0 at a large eps**: accuracy 0.0% at eps 0.5'
    """

    name: str
    status: str
    message: str
    numbers: Mapping[str, Any] = field(default_factory=dict)
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {', '.join(map(repr, STATUSES))}, got {self.status!r}")

    @property
    def title(self) -> str:
        """The check's human-readable title."""
        return CHECKS.get(self.name, self.name)

    def line(self) -> str:
        """The one-line markdown verdict.

        Returns:
            ``- STATUS  **title**: message``.

        Example:
            >>> CheckResult("transfer", "skip", "no surrogate").line()[:8]
            '- SKIP  '
        """
        kind = " _(attack strength, not masking)_" if CHECK_KINDS.get(self.name) == "weak-attack" else ""
        return f"- {self.status.upper():<5} **{md_text(self.title)}**{kind}: {md_text(self.message)}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict.

        Returns:
            ``{"name", "title", "status", "message", "tolerance", "numbers"}``.

        Example:
            >>> CheckResult("adaptive", "pass", "ok").to_dict()["title"]
            'Adaptive attack at least as strong as plain PGD'
        """
        return {"name": self.name, "title": self.title, "status": self.status, "message": self.message,
                "tolerance": self.tolerance, "numbers": dict(self.numbers)}


# --------------------------------------------------------------------------------------------------
# The checks (pure functions of the measured numbers)
# --------------------------------------------------------------------------------------------------


def _check_tol(tol: object, arg: str = "tol") -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not (0 <= float(tol) <= 1):
        raise ValueError(f"{arg}: expected a number in [0, 1], got {tol!r}")
    return float(tol)


def check_determinism(deterministic: bool, *, eot_samples: int, max_abs_diff: float = 0.0) -> CheckResult:
    """``deterministic``: warn when the eval forward is stochastic (randomised defences need EOT).

    Args:
        deterministic: the result of :func:`ib_plugins.adaptive.is_deterministic`.
        eot_samples: forwards averaged by the audit's attacks when it is not.
        max_abs_diff: largest output difference seen between two forwards.

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_determinism(False, eot_samples=8).status
        'warn'
    """
    numbers = {"deterministic": bool(deterministic), "eot_samples": eot_samples, "max_abs_diff": max_abs_diff}
    if deterministic:
        return CheckResult("deterministic", "pass", "two eval forwards give identical outputs", numbers)
    return CheckResult(
        "deterministic", "warn",
        f"the eval forward is NOT deterministic (outputs differ by up to {max_abs_diff:.3g}); every attack below "
        f"uses EOT over {eot_samples} forwards and predictions average {eot_samples} forwards", numbers,
    )


def _check_curve(xs: Sequence[float], accs: Sequence[float], arg: str) -> tuple[list[float], list[float]]:
    xs, accs = [float(v) for v in xs], [float(a) for a in accs]
    if len(xs) != len(accs) or not xs:
        raise ValueError(f"{arg}: expected as many accuracies as points (>= 1), got {len(xs)} and {len(accs)}")
    return xs, accs


def check_monotone_eps(eps: Sequence[float], accuracy: Sequence[float], *, tol: float = 0.03) -> CheckResult:
    """``monotone-eps``: robust accuracy must not rise with ε by more than ``tol``.

    Each accuracy is compared with the lowest accuracy at any smaller ε.

    Args:
        eps: the radii, increasing.
        accuracy: robust accuracy at each radius.
        tol: tolerated rise (absolute).

    Returns:
        The :class:`CheckResult` (``numbers["worst_rise"]`` is the largest rise seen).

    Example:
        >>> check_monotone_eps([0.0, 0.1], [0.9, 0.2]).status
        'pass'
    """
    tol = _check_tol(tol)
    xs, accs = _check_curve(eps, accuracy, "accuracy")
    worst, at = 0.0, None
    for i in range(1, len(accs)):
        rise = accs[i] - min(accs[:i])
        if rise > worst:
            worst, at = rise, xs[i]
    worst = round(worst, 6)
    numbers = {"eps": xs, "accuracy": accs, "worst_rise": worst, "at_eps": at}
    curve = ", ".join(f"{e:g}: {_pct(a)}" for e, a in zip(xs, accs))
    if worst > tol:
        text = f"accuracy rises by {_pct(worst)} at eps {at:g} (> tol {_pct(tol)}); curve {curve}"
        return CheckResult("monotone-eps", "warn", text, numbers, tol)
    return CheckResult("monotone-eps", "pass", f"non-increasing within {_pct(tol)}; curve {curve}", numbers, tol)


def check_large_eps(eps: Sequence[float], accuracy: Sequence[float], *, zero_tol: float = 0.05) -> CheckResult:
    """``large-eps``: at the largest ε, robust accuracy must be ≈ 0 (≤ ``zero_tol``).

    Args:
        eps: the radii, increasing.
        accuracy: robust accuracy at each radius.
        zero_tol: the largest accuracy that counts as ≈ 0.

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_large_eps([0.1, 0.5], [0.4, 0.3]).status
        'warn'
    """
    zero_tol = _check_tol(zero_tol, "zero_tol")
    xs, accs = _check_curve(eps, accuracy, "accuracy")
    numbers = {"eps": xs[-1], "accuracy": accs[-1]}
    if accs[-1] > zero_tol:
        hint = "" if xs[-1] >= 0.3 else " (the grid's largest eps is small; add a large one such as 0.5)"
        return CheckResult("large-eps", "warn", f"accuracy still {_pct(accs[-1])} at eps {xs[-1]:g} "
                           f"(expected <= {_pct(zero_tol)}){hint}", numbers, zero_tol)
    return CheckResult("large-eps", "pass", f"accuracy {_pct(accs[-1])} at eps {xs[-1]:g}", numbers, zero_tol)


def check_unbounded(success_rates: Mapping[str, float | None], *, success_tol: float = 0.02) -> CheckResult:
    """``unbounded``: the best unbounded attack must reach ≈ 100 % success on correct samples.

    Args:
        success_rates: attack name → success rate over the originally correct samples (None =
            no correct sample).
        success_tol: tolerated shortfall from 100 %.

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_unbounded({"pgd eps=1": 1.0, "cw-l2": 0.7}).status
        'pass'
    """
    success_tol = _check_tol(success_tol, "success_tol")
    rates = {k: v for k, v in success_rates.items() if v is not None}
    if not rates:
        return CheckResult("unbounded", "skip", "no correctly classified sample to attack", dict(success_rates))
    best_name = max(rates, key=lambda k: rates[k])
    best = rates[best_name]
    detail = ", ".join(f"{k} {_pct(v)}" for k, v in rates.items())
    numbers = {"success_rates": dict(success_rates), "best": best, "best_attack": best_name}
    if best < 1 - success_tol:
        text = f"best unbounded success only {_pct(best)} (< {_pct(1 - success_tol)}): {detail}"
        return CheckResult("unbounded", "warn", text, numbers, success_tol)
    return CheckResult("unbounded", "pass", f"{detail}", numbers, success_tol)


def check_iterative(pgd_accuracy: float, fgsm_accuracy: float, *, tol: float = 0.03) -> CheckResult:
    """``iterative-vs-single-step``: PGD accuracy must be ≤ FGSM accuracy + ``tol``.

    Args:
        pgd_accuracy: robust accuracy under PGD.
        fgsm_accuracy: robust accuracy under FGSM (same ε).
        tol: tolerance.

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_iterative(0.6, 0.3).status
        'warn'
    """
    tol = _check_tol(tol)
    numbers = {"pgd_accuracy": pgd_accuracy, "fgsm_accuracy": fgsm_accuracy}
    text = f"PGD {_pct(pgd_accuracy)} vs FGSM {_pct(fgsm_accuracy)}"
    if pgd_accuracy > fgsm_accuracy + tol:
        return CheckResult("iterative-vs-single-step", "warn", f"{text}: the iterative attack is weaker", numbers, tol)
    return CheckResult("iterative-vs-single-step", "pass", text, numbers, tol)


def check_steps_restarts(
    steps: Sequence[int], accuracy: Sequence[float], *, restarts: int, restart_accuracy: float,
    single_accuracy: float, tol: float = 0.03,
) -> CheckResult:
    """``steps-restarts``: more steps, and restarts, must not raise accuracy beyond ``tol``.

    Args:
        steps: PGD step counts, increasing.
        accuracy: robust accuracy at each step count.
        restarts: number of restarts of the restart run.
        restart_accuracy: accuracy of PGD with ``restarts`` restarts.
        single_accuracy: accuracy of the same PGD with one run.
        tol: tolerance.

    Returns:
        The :class:`CheckResult` (``numbers["restart_gain"]`` = how much restarts lowered accuracy).

    Example:
        >>> check_steps_restarts([1, 10], [0.5, 0.2], restarts=3, restart_accuracy=0.18, single_accuracy=0.2).status
        'pass'
    """
    tol = _check_tol(tol)
    xs, accs = _check_curve(steps, accuracy, "accuracy")
    worst, at = 0.0, None
    for i in range(1, len(accs)):
        rise = accs[i] - min(accs[:i])
        if rise > worst:
            worst, at = rise, int(xs[i])
    worst = round(worst, 6)
    restart_rise = round(restart_accuracy - single_accuracy, 6)
    numbers = {"steps": [int(s) for s in xs], "accuracy": accs, "worst_rise": worst, "at_steps": at,
               "restarts": restarts, "restart_accuracy": restart_accuracy, "single_accuracy": single_accuracy,
               "restart_gain": round(single_accuracy - restart_accuracy, 6)}
    curve = ", ".join(f"{int(s)}: {_pct(a)}" for s, a in zip(xs, accs))
    problems = []
    if worst > tol:
        problems.append(f"accuracy rises by {_pct(worst)} at {at} steps")
    if restart_rise > tol:
        problems.append(f"{restarts} restarts raise accuracy by {_pct(restart_rise)}")
    text = f"steps {curve}; {restarts} restarts {_pct(restart_accuracy)} vs 1 run {_pct(single_accuracy)}"
    if problems:
        return CheckResult("steps-restarts", "warn", "; ".join(problems) + f" ({text})", numbers, tol)
    return CheckResult("steps-restarts", "pass", text, numbers, tol)


def _not_stronger(name: str, label: str, other: float, pgd: float, tol: float) -> CheckResult:
    numbers = {f"{label}_accuracy": other, "pgd_accuracy": pgd}
    text = f"{label} {_pct(other)} vs PGD {_pct(pgd)}"
    if other < pgd - tol:
        return CheckResult(name, "warn", f"{text}: {label} finds {_pct(pgd - other)} more adversarial examples than "
                           "white-box PGD", numbers, tol)
    return CheckResult(name, "pass", text, numbers, tol)


def check_black_box(square_accuracy: float, pgd_accuracy: float, *, tol: float = 0.03) -> CheckResult:
    """``black-box``: Square accuracy must be ≥ PGD accuracy − ``tol``.

    Args:
        square_accuracy: robust accuracy under the Square attack.
        pgd_accuracy: robust accuracy under white-box PGD (same ε).
        tol: tolerance.

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_black_box(0.1, 0.5).status
        'warn'
    """
    return _not_stronger("black-box", "square", square_accuracy, pgd_accuracy, _check_tol(tol))


def check_transfer(transfer_accuracy: float | None, pgd_accuracy: float, *, tol: float = 0.03,
                   reason: str = "no surrogate") -> CheckResult:
    """``transfer``: accuracy under surrogate-transferred PGD must be ≥ PGD accuracy − ``tol``.

    Args:
        transfer_accuracy: accuracy of the audited model on the surrogate's adversarial examples;
            None skips the check.
        pgd_accuracy: white-box PGD accuracy (same ε).
        tol: tolerance.
        reason: why there is no transfer accuracy (for the skip message).

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_transfer(None, 0.3).status
        'skip'
    """
    tol = _check_tol(tol)
    if transfer_accuracy is None:
        return CheckResult("transfer", "skip", reason, {"pgd_accuracy": pgd_accuracy})
    return _not_stronger("transfer", "transfer", transfer_accuracy, pgd_accuracy, tol)


def check_adaptive(adaptive_accuracy: Mapping[str, float], pgd_accuracy: float, *, tol: float = 0.03,
                   reason: str = "the model has no IB or entropic configuration") -> CheckResult:
    """``adaptive``: the strongest adaptive attack must reach accuracy ≤ PGD accuracy + ``tol``.

    Args:
        adaptive_accuracy: adaptive attack name → robust accuracy (empty skips the check).
        pgd_accuracy: plain PGD accuracy (same ε, steps and step size).
        tol: tolerance.
        reason: why no adaptive attack applies (for the skip message).

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_adaptive({"pgd-ib": 0.31}, 0.30).status
        'pass'
        >>> check_adaptive({}, 0.3).status
        'skip'
    """
    tol = _check_tol(tol)
    if not adaptive_accuracy:
        return CheckResult("adaptive", "skip", reason, {"pgd_accuracy": pgd_accuracy})
    best = min(adaptive_accuracy, key=lambda k: adaptive_accuracy[k])
    numbers = {"adaptive_accuracy": dict(adaptive_accuracy), "pgd_accuracy": pgd_accuracy, "best_attack": best}
    detail = ", ".join(f"{k} {_pct(v)}" for k, v in adaptive_accuracy.items())
    text = f"{detail} vs PGD {_pct(pgd_accuracy)}"
    if adaptive_accuracy[best] > pgd_accuracy + tol:
        return CheckResult("adaptive", "warn", f"{text}: the adaptive attack is weaker than plain PGD (its objective "
                           "fights the CE term, or its gradients are masked)", numbers, tol)
    return CheckResult("adaptive", "pass", text, numbers, tol)


def check_loss_functions(margin_accuracy: float, ce_accuracy: float, *, tol: float = 0.03) -> CheckResult:
    """``loss-functions``: PGD on the margin loss must not beat PGD on CE by more than ``tol``.

    Args:
        margin_accuracy: accuracy under margin-loss PGD.
        ce_accuracy: accuracy under CE PGD (same settings).
        tol: tolerance.

    Returns:
        The :class:`CheckResult`.

    Example:
        >>> check_loss_functions(0.0, 0.9).status
        'warn'
    """
    tol = _check_tol(tol)
    numbers = {"margin_accuracy": margin_accuracy, "ce_accuracy": ce_accuracy}
    text = f"margin PGD {_pct(margin_accuracy)} vs CE PGD {_pct(ce_accuracy)}"
    if margin_accuracy < ce_accuracy - tol:
        return CheckResult("loss-functions", "warn", f"{text}: the CE gradient is uninformative (saturated softmax?)",
                           numbers, tol)
    return CheckResult("loss-functions", "pass", text, numbers, tol)


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


@dataclass
class AuditReport:
    """The result of :func:`run_audit`.

    Attributes:
        checks: one :class:`CheckResult` per check, in :data:`CHECKS` order.
        numbers: every measured number (also in ``audit.json``).
        config: the audit's settings.
        out_dir: the report folder (None when nothing was written).
        files: name → path of the written files.

    Example:
        >>> r = AuditReport([CheckResult("large-eps", "warn", "x"), CheckResult("adaptive", "skip", "y")], {}, {})
        >>> r.verdict, r.warned
        ('warn', ['large-eps'])
        >>> AuditReport([CheckResult("adaptive", "warn", "x")], {}, {}).verdict
        'weak-attack'
    """

    checks: list[CheckResult]
    numbers: dict[str, Any]
    config: dict[str, Any]
    out_dir: Path | None = None
    files: dict[str, str] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"warn"`` if a masking indicator warns, ``"weak-attack"`` if only weak-attack checks warn, else ``"pass"``."""
        if self.masking_warnings:
            return "warn"
        return "weak-attack" if self.weak_attack_warnings else "pass"

    @property
    def warned(self) -> list[str]:
        """Names of the checks that warn (both kinds)."""
        return [c.name for c in self.checks if c.status == "warn"]

    @property
    def masking_warnings(self) -> list[str]:
        """Names of the masking-indicator checks that warn (see :data:`CHECK_KINDS`)."""
        return [n for n in self.warned if CHECK_KINDS.get(n, "masking") == "masking"]

    @property
    def weak_attack_warnings(self) -> list[str]:
        """Names of the weak-attack checks that warn (the attack, not the model; see :data:`CHECK_KINDS`)."""
        return [n for n in self.warned if CHECK_KINDS.get(n, "masking") == "weak-attack"]

    @property
    def robust_accuracy(self) -> float | None:
        """Worst-case accuracy over every attack the audit ran at the main ε (None before any ran).

        A sample counts as robust only when it is classified correctly without attack and after
        each of those attacks (the per-sample minimum, as AutoAttack reports it).
        """
        worst = self.numbers.get("worst_case") or {}
        return worst.get("accuracy")

    def __getitem__(self, name: str) -> CheckResult:
        """The check called ``name``.

        Raises:
            ValueError: no such check (the message lists them).
        """
        for c in self.checks:
            if c.name == name:
                return c
        raise ValueError(f"name: expected one of {', '.join(repr(c.name) for c in self.checks)}, got {name!r}")

    def summary(self) -> str:
        """One line: the verdict and the counts.

        Returns:
            The summary text.

        Example:
            >>> AuditReport([CheckResult("large-eps", "pass", "x")], {}, {}).summary()
            'PASS: all 1 applicable checks pass (0 skipped); no sign of gradient masking found by these checks.'
            >>> print(AuditReport([CheckResult("large-eps", "pass", "x"), CheckResult("adaptive", "warn", "y")],
            ...                   {"worst_case": {"accuracy": 0.5, "eps": 0.1, "attacks": ["pgd", "fgsm"]}}, {}).summary())
            PASS on the 1 applicable masking check (0 skipped): no sign of gradient masking. Weak attack: adaptive (the defence-aware attack is weaker than plain PGD; a finding about the attack, not the model). Robust accuracy: 50.0% (worst case over 2 attacks at eps=0.1).
        """
        applicable = [c for c in self.checks if c.status != "skip"]
        skipped = len(self.checks) - len(applicable)
        weak = self.weak_attack_warnings
        weak_text = (
            f"Weak attack: {', '.join(weak)} (the defence-aware attack is weaker than plain PGD; a finding about the "
            "attack, not the model)." if weak else ""
        )
        worst = self.numbers.get("worst_case") or {}
        robust_text = (
            f"Robust accuracy: {_pct(worst['accuracy'])} (worst case over {len(worst.get('attacks', []))} attacks at "
            f"eps={worst.get('eps', '?'):g})." if worst.get("accuracy") is not None else ""
        )
        if not self.warned:
            head = (f"PASS: all {len(applicable)} applicable checks pass ({skipped} skipped); no sign of gradient "
                    "masking found by these checks.")
        elif not self.masking_warnings:
            n_mask = len([c for c in applicable if CHECK_KINDS.get(c.name, "masking") == "masking"])
            head = (f"PASS on the {n_mask} applicable masking check{'s' if n_mask != 1 else ''} ({skipped} skipped): "
                    f"no sign of gradient masking. {weak_text}")
        else:
            masking = self.masking_warnings
            head = (f"WARN: {len(masking)} of {len(applicable)} applicable checks warn ({', '.join(masking)}): signs of "
                    f"gradient masking; {skipped} skipped. The robustness may be overestimated; see below."
                    + (f" {weak_text}" if weak_text else ""))
        return " ".join(part for part in (head, robust_text) if part)

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-serialisable data (the content of ``audit.json``).

        Returns:
            ``{"verdict", "summary", "checks", "numbers", "config"}``.

        Example:
            >>> AuditReport([], {}, {}).to_dict()["verdict"]
            'pass'
        """
        return {"verdict": self.verdict, "summary": self.summary(), "robust_accuracy": self.robust_accuracy,
                "masking_warnings": self.masking_warnings, "weak_attack_warnings": self.weak_attack_warnings,
                "checks": [c.to_dict() for c in self.checks], "numbers": self.numbers, "config": self.config}

    def _attack_rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for key, entry in (self.numbers.get("attacks") or {}).items():
            rows.append((key, str(entry.get("threat", "")), _pct(entry.get("accuracy")),
                         _pct(entry.get("success_rate")), f"{entry.get('seconds', 0.0):.1f}"))
        return rows

    def to_markdown(self) -> str:
        """The markdown report (summary and one line per check at the top, then the numbers).

        Returns:
            The text of ``audit.md``.

        Example:
            >>> report = AuditReport([CheckResult("large-eps", "pass", "ok")], {}, {"target": "m"})
            >>> print(report.to_markdown().splitlines()[0])
            # Gradient-masking audit: m
        """
        n = self.numbers
        lines = [f"# Gradient-masking audit: {md_text(self.config.get('target', 'model'))}", "",
                 f"**{md_text(self.summary())}**", ""]
        lines += [c.line() for c in self.checks]
        lines += ["", "Following Carlini et al. (2019), *On Evaluating Adversarial Robustness*. A WARN is a reason to "
                  "look closer, not a proof of masking; passing every check is no proof of robustness.", ""]
        if n:
            lines += ["## Setting", ""]
            mode = "quick" if self.config.get("quick") else "full"
            lines.append(f"- {n.get('n')} test images, clean accuracy {_pct(n.get('clean_accuracy'))}; main eps "
                         f"{n.get('eps')} (L-inf); seed {self.config.get('seed')}; mode {mode}.")
            if n.get("worst_case"):
                w = n["worst_case"]
                lines.append(f"- Robust accuracy at eps {w['eps']:g}: **{_pct(w['accuracy'])}**, the worst case per "
                             f"sample over the {len(w['attacks'])} attacks run at that eps "
                             f"({', '.join(md_text(a) for a in w['attacks'])}); the strongest single attack, "
                             f"{md_text(w['strongest_single'])}, leaves {_pct(w['strongest_single_accuracy'])}.")
            if not n.get("deterministic", True):
                lines.append(f"- The eval forward is **not deterministic**: every attack uses EOT over "
                             f"{n.get('eot_samples')} forwards, predictions average {n.get('eot_samples')} forwards.")
            if n.get("ib_config"):
                lines.append(f"- IB configuration used by pgd-ib: {md_json(n['ib_config'])}")
            if n.get("entropic_config"):
                lines.append(f"- Entropic configuration used by pgd-entropic: {md_json(n['entropic_config'])}")
            if n.get("surrogate"):
                s = n["surrogate"]
                lines.append(f"- Surrogate: {md_text(s.get('source'))}, "
                             f"clean accuracy {_pct(s.get('clean_accuracy'))}, "
                             f"its own PGD accuracy {_pct(s.get('pgd_accuracy'))}.")
            lines += ["", "## Attacks", "", "| attack | threat model | accuracy | success rate | time (s) |",
                      "|---|---|---|---|---|"]
            lines += [f"| {md_cell(a)} | {md_cell(b)} | {c} | {d} | {e} |" for a, b, c, d, e in self._attack_rows()]
            if "cw_comparison" in n:
                cw = n["cw_comparison"]
                lines += ["", f"CW: torchattacks' `CW` (margin with a 0 in the true-class slot, spec §2.7 item 11) "
                          f"reaches {_pct(cw.get('torchattacks_success'))} success, the corrected `cw-l2` "
                          f"{_pct(cw.get('corrected_success'))}."]
                if cw.get("note"):
                    lines += ["", "The model's outputs look like log-probabilities: torchattacks' CW margin is "
                              "identically 0 on them (spec §2.7 item 11)."]
            for key, title, xlabel in (("eps_curve", "Accuracy vs eps (PGD)", "eps"),
                                       ("steps_curve", "Accuracy vs PGD steps", "steps")):
                if key in n:
                    xs, accs = n[key][xlabel], n[key]["accuracy"]
                    lines += ["", f"## {title}", "", f"| {xlabel} | " + " | ".join(f"{x:g}" for x in xs) + " |",
                              "|---|" + "---|" * len(xs), "| accuracy | " + " | ".join(_pct(a) for a in accs) + " |"]
            for key in ("accuracy_vs_eps", "accuracy_vs_steps"):
                if key in self.files:
                    lines += ["", f"![{key}]({key}.png)"]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        """A self-contained HTML page (inline CSS, PNGs embedded as data URIs; no external resource).

        Returns:
            The text of ``audit.html``.

        Example:
            >>> page = AuditReport([CheckResult("large-eps", "warn", "acc 40%")], {}, {}).to_html()
            >>> "<html" in page and "http" not in page.replace("http-equiv", "")
            True
        """
        esc = html.escape
        colors = {"pass": "#1a7f37", "warn": "#b35900", "skip": "#6e7781", "weak-attack": "#8250df"}
        rows = "".join(
            f"<tr><td><b style='color:{colors[c.status]}'>{c.status.upper()}</b></td><td>{esc(c.title)}</td>"
            f"<td>{esc(c.message)}</td></tr>" for c in self.checks
        )
        attack_rows = "".join(f"<tr>{''.join(f'<td>{esc(v)}</td>' for v in r)}</tr>" for r in self._attack_rows())
        images = ""
        for key in ("accuracy_vs_eps", "accuracy_vs_steps"):
            path = self.files.get(key)
            if path and Path(path).is_file():
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                images += (f"<figure><img alt='{key}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{key}</figcaption></figure>")
        verdict_color = colors[self.verdict]
        numbers = esc(json.dumps(self.numbers, indent=2, sort_keys=True, default=str))
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Gradient-masking audit: {esc(str(self.config.get('target', 'model')))}</title><style>"
            "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#1f2328}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #d0d7de;padding:4px 8px;"
            "text-align:left;vertical-align:top}th{background:#f6f8fa}figure{display:inline-block;margin:0 1em 1em 0}"
            "pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:12px}</style></head><body>"
            f"<h1>Gradient-masking audit: {esc(str(self.config.get('target', 'model')))}</h1>"
            f"<p style='font-size:1.15em;color:{verdict_color}'><b>{esc(self.summary())}</b></p>"
            f"<table><tr><th>status</th><th>check</th><th>numbers</th></tr>{rows}</table>"
            "<p>Following Carlini et al. (2019), <i>On Evaluating Adversarial Robustness</i>. "
            "A WARN is a reason to look "
            "closer, not a proof of masking; passing every check is no proof of robustness.</p>"
            "<h2>Attacks</h2><table><tr><th>attack</th><th>threat model</th><th>accuracy</th><th>success rate</th>"
            f"<th>time (s)</th></tr>{attack_rows}</table>{images}"
            f"<h2>All numbers</h2><pre>{numbers}</pre></body></html>\n"
        )


# --------------------------------------------------------------------------------------------------
# Running the audit
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Settings:
    n: int
    pgd_steps: int
    steps_grid: tuple[int, ...]
    restarts: int
    square_queries: int
    cw_steps: int
    cw_search_steps: int
    surrogate_epochs: int


_QUICK = _Settings(n=100, pgd_steps=10, steps_grid=(1, 5, 10, 20), restarts=3, square_queries=500, cw_steps=100,
                   cw_search_steps=1, surrogate_epochs=5)
_FULL = _Settings(n=450, pgd_steps=20, steps_grid=(1, 10, 20, 50, 100), restarts=5, square_queries=2000, cw_steps=200,
                  cw_search_steps=3, surrogate_epochs=10)
_LARGE_EPS = 0.5
_SURROGATE_MODELS = {"digits": "digits-cnn", "mnist": "lenet5", "fashion-mnist": "lenet5", "cifar10": "keras-cifar-cnn",
                     "cifar100": "keras-cifar-cnn", "svhn": "keras-cifar-cnn"}


def default_eps_grid(eps: float, *, quick: bool = False) -> list[float]:
    """The ε grid of the accuracy-vs-ε curve: multiples of the main ε plus a large ε (0.5).

    Args:
        eps: the main L∞ radius.
        quick: the short grid ``0, ε/2, ε, 2ε, 0.5`` instead of ``0, ε/4, ε/2, ε, 2ε, 3ε, 0.5``.

    Returns:
        Strictly increasing radii in ``[0, 1]``.

    Example:
        >>> default_eps_grid(0.1, quick=True)
        [0.0, 0.05, 0.1, 0.2, 0.5]
    """
    factors = (0, 0.5, 1, 2) if quick else (0, 0.25, 0.5, 1, 2, 3)
    grid = {round(f * eps, 6) for f in factors} | {max(_LARGE_EPS, round(4 * eps, 6)) if eps < 0.25 else 1.0}
    return sorted(v for v in grid if 0 <= v <= 1)


def _check_eps_grid(eps_grid: object) -> list[float]:
    if isinstance(eps_grid, (str, bytes)) or not isinstance(eps_grid, Sequence) or len(eps_grid) < 2:
        raise ValueError(f"eps_grid: expected a sequence of at least 2 radii, got {eps_grid!r}")
    values = []
    for v in eps_grid:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"eps_grid: expected numbers, got {eps_grid!r}")
        values.append(float(v))
    if any(v < 0 or v > 1 for v in values):
        raise ValueError(f"eps_grid: expected L-inf radii in [0, 1], got {values}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"eps_grid: expected strictly increasing radii, got {values}")
    return values


def train_surrogate(
    dataset: str, *, model: str | None = None, epochs: int = 5, seed: int = 1, train_limit: int | None = None,
    data_dir: str | None = None, device: str = "cpu", progress: bool = False,
) -> nn.Module:
    """Train a small undefended (plain CE) surrogate for transfer attacks, in a temporary folder.

    Args:
        dataset: dataset name.
        model: architecture (default: a small model of the dataset: ``digits-cnn``, ``lenet5``,
            ``keras-cifar-cnn``).
        epochs: training epochs.
        seed: seed of the run (use one that differs from the audited model's).
        train_limit: train on a stratified subset.
        data_dir: dataset folder.
        device: device.
        progress: show tqdm bars.

    Returns:
        The trained network in eval mode.

    Raises:
        ValueError: no default architecture for the dataset and none given.

    Example:
        >>> net = train_surrogate("digits", epochs=1, train_limit=100)
        >>> net.training
        False
    """
    from ib_plugins.training import TrainConfig, Trainer

    arch = model or _SURROGATE_MODELS.get(dataset)
    if arch is None:
        raise ValueError(f"model: no default surrogate architecture for dataset {dataset!r}; pass model=<name>")
    cfg = TrainConfig(dataset=dataset, model=arch, method="ce", epochs=epochs, batch_size=50, seed=seed,
                      train_limit=train_limit, data_dir=data_dir, device=device)
    with tempfile.TemporaryDirectory(prefix="ib-audit-surrogate-") as tmp:
        trainer = Trainer(cfg, out_dir=tmp, progress=progress)
        trainer.fit()
        return trainer.eval_model().eval()


def _num_outputs(model: nn.Module, x: Tensor, dev: torch.device) -> int:
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda), _inference_modes(model):
            out = model(x[:2].to(dev))
    except (RuntimeError, ValueError, TypeError, IndexError) as err:  # e.g. a user's model for other input sizes
        reason = " ".join(str(err).split())[:300]
        raise ValueError(f"model: the forward fails on the test inputs of shape {list(x[:2].shape)} "
                         f"({type(err).__name__}: {reason})") from err
    if not isinstance(out, Tensor) or out.dim() != 2:
        got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise TypeError(f"model: expected the forward to return logits [N, num_classes], got {got}")
    return int(out.shape[1])


def _max_diff(model: nn.Module, x: Tensor, dev: torch.device) -> float:
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=cuda), _inference_modes(model):
        a, b = model(x.to(dev)), model(x.to(dev))
    return float((a - b).abs().max())


class _Progress:
    """The audit's bar over its attacks and checks (tqdm on a terminal, plain lines elsewhere)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from ib_plugins._progress import PhaseProgress

        self._phases = PhaseProgress(total=total, desc="audit", enabled=enabled, unit="step", logger=logger)

    def stage(self, name: str) -> Any:
        return self._phases.phase(name)

    def close(self) -> None:
        self._phases.close()


def _plot_curve(xs: Sequence[float], accs: Sequence[float], path: Path, *, xlabel: str, title: str,
                extra: Mapping[str, tuple[float, float]] | None = None) -> Path:
    from ib_plugins._optional import require

    require("matplotlib", purpose="ib_plugins.audit plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(list(xs), [100 * a for a in accs], marker="o", label="PGD")
    for i, (label, (x, a)) in enumerate((extra or {}).items()):
        ax.scatter([x], [100 * a], marker="x", s=60, label=label, zorder=3, color=f"C{(i + 1) % 10}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Robust accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def run_audit(
    checkpoint_or_model: PathLike | nn.Module,
    *,
    out_dir: PathLike | None,
    quick: bool = False,
    eps_grid: Sequence[float] | None = None,
    surrogate: PathLike | nn.Module | bool | None = None,
    eps: float | None = None,
    n: int | None = None,
    x: Tensor | None = None,
    y: Tensor | None = None,
    dataset: str | None = None,
    ib_config: Any = None,
    entropic_config: Any = None,
    surrogate_epochs: int | None = None,
    eot_samples: int = 8,
    tol: float = 0.03,
    zero_tol: float = 0.05,
    success_tol: float = 0.02,
    seed: int = 0,
    batch_size: int = 100,
    data_dir: str | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    engine: str = "builtin",
    name: str | None = None,
    ema: bool = False,
) -> AuditReport:
    """Run every gradient-masking check on a checkpoint or a model and write the report folder.

    Args:
        checkpoint_or_model: a ``checkpoint.pt`` of :class:`~ib_plugins.training.Trainer` (its IB /
            entropic configuration is read from the stored TrainConfig) or a model.
        out_dir: the report folder (None: write nothing, only return the report).
        quick: the CI setting (100 images, 10 PGD steps, short grids, 500 Square queries, a 5-epoch
            surrogate); default: 450 images, 20 steps, longer grids, 2000 queries, 10 epochs.
        eps_grid: radii of the accuracy-vs-ε curve, strictly increasing in ``[0, 1]``; None:
            :func:`default_eps_grid` (its largest value, 0.5, serves the ``large-eps`` check).
        surrogate: None (or True): train a small CE surrogate on the dataset (skipped, with the
            reason, when the dataset is unknown); a checkpoint path or a model: use it; ``False`` or
            ``"none"``: skip the transfer check.
        eps: the main L∞ radius; None: the dataset's IB-RAR budget (0.1 on digits, 0.03 on CIFAR).
        n: test images (a stratified, seeded subset of the test split; the first ``n`` of ``x``/``y``
            when given; default 100 quick / 450 full).
        x: test inputs in ``[0, 1]`` (instead of loading the dataset's test split).
        y: test labels, with ``x``.
        dataset: the dataset of a model (checkpoints know theirs).
        ib_config: IB configuration of a model for ``pgd-ib`` (checkpoints and IBModels carry it).
        entropic_config: entropic configuration of a model for ``pgd-entropic``.
        surrogate_epochs: epochs of the trained surrogate (default 5 quick / 10 full).
        eot_samples: forwards averaged when the eval forward is not deterministic.
        tol: tolerance of the comparisons (absolute accuracy).
        zero_tol: largest accuracy that counts as ≈ 0 at the largest ε.
        success_tol: tolerated shortfall of the unbounded attack from 100 % success.
        seed: seed of the data subset and of every attack.
        batch_size: samples per attack batch.
        data_dir: dataset folder.
        device: ``"cpu"`` or a CUDA device.
        overwrite: replace a report folder of a different audit.
        progress: show a tqdm bar over the audit's attacks.
        engine: the engine of the torchattacks-described attacks the audit runs (torchattacks' CW and
            Square): ``"builtin"`` (default) or ``"torchattacks"``.
        ema: audit a checkpoint's exponential moving average of the weights (runs with
            ``ema_decay``) instead of its raw weights.
        name: how the report names the audited model (default: the checkpoint path, or the model's
            class name).

    Returns:
        The :class:`AuditReport` (also written as ``audit.json``/``audit.md``/``audit.html``).

    Raises:
        ValueError: a non-increasing or out-of-range ``eps_grid``; a surrogate with a different
            number of classes; missing data (a model without ``x``/``y`` or ``dataset``); bad
            tolerances.
        CheckpointError: an unreadable checkpoint.
        RunExistsError: ``out_dir`` holds a different audit and ``overwrite`` is False.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(12, 1, 4, 4), torch.arange(12) % 3
        >>> report = run_audit(net, out_dir=None, quick=True, x=x, y=y, eps=0.1, surrogate=False, progress=False)
        >>> report["transfer"].status, report["adaptive"].status, report.verdict in ("pass", "warn")
        ('skip', 'skip', True)
    """
    from ib_plugins import adaptive as adp
    from ib_plugins._validation import _check_int, _check_xy
    from ib_plugins.evaluation import AttackSpec, _check_engine, default_budget, run_attack

    t_start = time.perf_counter()
    settings = _QUICK if quick else _FULL
    tol, zero_tol = _check_tol(tol), _check_tol(zero_tol, "zero_tol")
    success_tol = _check_tol(success_tol, "success_tol")
    seed = _check_int(seed, "seed")
    batch_size = _check_int(batch_size, "batch_size", minimum=2)
    eot_samples = _check_int(eot_samples, "eot_samples", minimum=2)
    if eps_grid is not None:
        eps_grid = _check_eps_grid(eps_grid)
    from ib_plugins.training import _device

    device = str(_device(device))  # unknown names, meta, a missing CUDA device: a clear error now
    engine = _check_engine(engine)
    if surrogate_epochs is not None:
        surrogate_epochs = _check_int(surrogate_epochs, "surrogate_epochs", minimum=1)
    if surrogate is True:
        surrogate = None
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"name: expected a non-empty string or None, got {name!r}")

    # -- the target ----------------------------------------------------------------------------
    train_cfg = None
    ent_cfg = None
    ib_cfg = None
    if isinstance(checkpoint_or_model, nn.Module):
        model = checkpoint_or_model
        target_name = type(model).__name__
        if ib_config is not None or adp._find_ibmodel(model) is not None:
            ib_cfg = adp.resolve_ib_config(model, ib_config)
        if entropic_config is not None:
            ent_cfg = adp.resolve_entropic_config(model, entropic_config)
    elif isinstance(checkpoint_or_model, (str, os.PathLike)):
        target = adp.load_attack_target(checkpoint_or_model, map_location=device, weights="ema" if ema else "raw")
        model, train_cfg = target.model, target.config
        target_name = str(checkpoint_or_model)
        dataset = dataset or train_cfg.dataset
        data_dir = data_dir or train_cfg.data_dir
        ib_cfg = adp.resolve_ib_config(model, ib_config) if ib_config is not None else target.ib_config
        ent_cfg = (adp.resolve_entropic_config(model, entropic_config) if entropic_config is not None
                   else target.entropic_config)
    else:
        raise TypeError(f"checkpoint_or_model: expected a checkpoint path or a torch.nn.Module, got "
                        f"{type(checkpoint_or_model).__name__}")
    if name is not None:
        target_name = name
    dev = torch.device(device)

    # -- the data ------------------------------------------------------------------------------
    n_images = settings.n if n is None else _check_int(n, "n", minimum=2)
    if x is not None or y is not None:
        if x is None or y is None:
            raise ValueError("x, y: expected both test inputs and labels, got only one")
        x, y = _check_xy(x, y)
        x, y = x[:n_images], y[:n_images]
    elif dataset is not None:
        from ib_plugins.data import load_dataset

        ds = load_dataset(dataset, split="test", data_dir=data_dir, limit=n_images, seed=seed)
        if hasattr(ds, "tensors"):
            x, y = ds.tensors
        else:
            xs, ys = zip(*(ds[i] for i in range(len(ds))))
            x, y = torch.stack(xs), torch.as_tensor(ys)
        x, y = _check_xy(x, y)
    else:
        raise ValueError("x, y: expected test data (x=, y=) or dataset= for a model; a checkpoint knows its dataset")
    if eps is None:
        if dataset is None:
            raise ValueError("eps: expected the main L-inf radius (or dataset= to use its budget), got None")
        eps = default_budget(dataset, "ibrar").linf_eps
    eps = float(eps)
    if not 0 < eps <= 1:
        raise ValueError(f"eps: expected an L-inf radius in (0, 1], got {eps!r}")
    grid = eps_grid if eps_grid is not None else default_eps_grid(eps, quick=quick)
    num_classes = _num_outputs(model, x, dev)
    if int(y.max()) >= num_classes:
        raise ValueError(f"y: expected class indices < {num_classes} (the model's outputs), got {int(y.max())}")

    # -- surrogate -----------------------------------------------------------------------------
    surrogate_model: nn.Module | None = None
    surrogate_info: dict[str, Any] = {}
    skip_transfer = "no surrogate"
    if surrogate is False or (isinstance(surrogate, str) and surrogate.lower() == "none"):
        skip_transfer = "transfer check disabled (surrogate=none)"
    elif isinstance(surrogate, nn.Module):
        surrogate_model, surrogate_info = surrogate, {"source": f"given {type(surrogate).__name__}"}
    elif isinstance(surrogate, (str, os.PathLike)):
        from ib_plugins.training import load_model_from_checkpoint

        surrogate_model, s_cfg, _ = load_model_from_checkpoint(surrogate, map_location=device)
        surrogate_info = {"source": f"checkpoint {surrogate} ({s_cfg.method} {s_cfg.model})"}
    elif surrogate is None and dataset is None:
        skip_transfer = "no surrogate given and no dataset to train one on"
    elif surrogate is not None and surrogate is not True:
        raise TypeError(
            f"surrogate: expected None, a checkpoint path, a model or False, got {type(surrogate).__name__}"
        )
    if surrogate_model is not None:
        s_out = _num_outputs(surrogate_model, x, dev)
        if s_out != num_classes:
            raise ValueError(f"surrogate: expected a model with {num_classes} outputs (the audited model's classes), "
                             f"got {s_out}")

    config: dict[str, Any] = {
        "kind": "audit", "target": target_name, "quick": bool(quick), "eps": eps, "eps_grid": list(grid),
        "n": int(x.shape[0]), "seed": seed, "batch_size": batch_size, "tol": tol, "zero_tol": zero_tol,
        "success_tol": success_tol, "eot_samples": eot_samples, "dataset": dataset,
        "surrogate": surrogate_info.get("source") if surrogate_model is not None else (
            "train" if surrogate is None and dataset is not None else "none"),
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.__dict__.items()},
        "engine": engine,
        "ema_weights": bool(ema),
        "train_config": train_cfg.to_dict() if train_cfg is not None else None,
    }
    out: Path | None = None
    if out_dir is not None:
        from ib_plugins.experiments import prepare_results_dir

        out = Path(out_dir)
        prepare_results_dir(out, config, overwrite=overwrite)

    # -- determinism ---------------------------------------------------------------------------
    probe_x = x[:batch_size]
    deterministic = adp.is_deterministic(model, probe_x.to(dev), trials=3)
    max_diff = 0.0 if deterministic else _max_diff(model, probe_x, dev)
    k = 1 if deterministic else eot_samples
    scored = model if deterministic else adp.EOTModel(model, eot_samples=eot_samples)
    if not deterministic:
        logger.warning("audit: the eval forward of %s is not deterministic; using EOT over %d forwards", target_name, k)

    will_train = surrogate_model is None and surrogate is None and dataset is not None
    n_stages = (len([e for e in grid if e > 0]) + (0 if eps in grid else 1) + 1
                + len([s for s in settings.steps_grid if s != settings.pgd_steps]) + 1 + 3 + 1
                + (1 if will_train else 0) + (1 if surrogate_model is not None or will_train else 0)
                + (2 if ib_cfg else 0) + (2 if ent_cfg else 0) + 1)
    bar = _Progress(n_stages, progress)
    attacks: dict[str, dict[str, Any]] = {}

    def predict(net: nn.Module, inputs: Tensor) -> Tensor:
        return adp._predict(net, inputs, batch_size=batch_size, dev=dev, seed=seed)

    clean_ok = predict(scored, x) == y
    robust_all = clean_ok.clone()  # per sample: correct before and after every attack at the main eps
    main_attacks: list[str] = []

    def score(key: str, threat: str, adv: Tensor, seconds: float, *, main_eps: bool = False,
              **extra: Any) -> dict[str, Any]:
        adv_ok = predict(scored, adv) == y
        if main_eps:
            robust_all.logical_and_(adv_ok)
            main_attacks.append(key)
        n_correct = int(clean_ok.sum())
        delta = (adv - x).flatten(1).float()
        entry = {"threat": threat, "accuracy": float(adv_ok.float().mean()),
                 "success_rate": float((clean_ok & ~adv_ok).sum()) / n_correct if n_correct else None,
                 "n_robust": int(adv_ok.sum()), "seconds": round(seconds, 3),
                 "max_linf": float(delta.abs().max()), "mean_l2": float(delta.norm(dim=1).mean()), **extra}
        attacks[key] = entry
        return entry

    def pgd(key: str, e: float, *, steps: int | None = None, name: str = "pgd-ce", net: nn.Module | None = None,
            **kw: Any) -> dict[str, Any]:
        s = settings.pgd_steps if steps is None else steps
        kw.setdefault("alpha", 2.5 * e / s)
        t0 = time.perf_counter()
        adv = adp.run_adaptive_attack(net if net is not None else model, name, x, y, eps=e, steps=s, seed=seed,
                                      eot_samples=k if net is None else 1, batch_size=batch_size, device=device,
                                      ib_config=ib_cfg, entropic_config=ent_cfg, **kw)
        label = f"L-inf eps={e:g}, {s} step{'s' if s > 1 else ''}"
        if kw.get("restarts", 1) > 1:
            label += f", {kw['restarts']} restarts"
        return score(key, label, adv, time.perf_counter() - t0, main_eps=(e == eps and net is None), eps=e, steps=s,
                     alpha=kw["alpha"])

    numbers: dict[str, Any] = {"n": int(x.shape[0]), "eps": eps, "clean_accuracy": float(clean_ok.float().mean()),
                               "deterministic": deterministic, "eot_samples": k, "num_classes": num_classes,
                               "ib_config": ib_cfg.to_dict() if ib_cfg else None,
                               "entropic_config": ent_cfg.to_dict() if ent_cfg else None}
    try:
        # accuracy vs eps (PGD)
        eps_accs: list[float] = []
        for e in grid:
            if e == 0:
                eps_accs.append(numbers["clean_accuracy"])
                continue
            with bar.stage(f"PGD eps={e:g}"):
                eps_accs.append(pgd(f"pgd eps={e:g}", e)["accuracy"])
        main = attacks.get(f"pgd eps={eps:g}")
        if main is None:
            with bar.stage(f"PGD eps={eps:g}"):
                main = pgd(f"pgd eps={eps:g}", eps)
        pgd_acc = main["accuracy"]
        numbers["eps_curve"] = {"eps": list(grid), "accuracy": eps_accs}
        numbers["pgd"] = dict(main)
        # single step
        with bar.stage("FGSM"):
            fgsm = pgd("fgsm", eps, steps=1, alpha=eps, random_start=False)
        # steps and restarts
        steps_accs = []
        for s in settings.steps_grid:
            if s == settings.pgd_steps:
                steps_accs.append(pgd_acc)
                continue
            with bar.stage(f"PGD {s} steps"):
                steps_accs.append(pgd(f"pgd {s} steps", eps, steps=s)["accuracy"])
        numbers["steps_curve"] = {"steps": list(settings.steps_grid), "accuracy": steps_accs}
        with bar.stage(f"PGD {settings.restarts} restarts"):
            restart = pgd(f"pgd {settings.restarts} restarts", eps, restarts=settings.restarts)
        # unbounded
        with bar.stage("PGD eps=1"):
            unb = pgd("pgd eps=1 (unbounded)", 1.0)
        with bar.stage("CW-L2 (corrected margin)"):
            t0 = time.perf_counter()
            adv = adp.run_adaptive_attack(model, "cw-l2", x, y, steps=settings.cw_steps, c=10.0, lr=0.05,
                                          search_steps=settings.cw_search_steps, eot_samples=k, seed=seed,
                                          batch_size=batch_size, device=device)
            threat = (f"L2 minimum-norm (corrected margin), c from 10, {settings.cw_steps} steps x "
                      f"{settings.cw_search_steps} searches")
            cw = score("cw-l2 (corrected)", threat, adv, time.perf_counter() - t0)
        with bar.stage("CW (torchattacks)"):
            t0 = time.perf_counter()
            spec = AttackSpec("cw", "l2", None, {"c": 10.0, "kappa": 0, "steps": settings.cw_steps, "lr": 0.05})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                adv = run_attack(scored, spec, x, y, batch_size=batch_size, seed=seed, device=device, progress=False,
                                 engine=engine)
            cw_note = next((str(w.message) for w in caught if "log-probabilities" in str(w.message)), None)
            cw_ta = score("cw (torchattacks)", f"fixed-c CW-L2 (torchattacks' CW), c=10, {settings.cw_steps} steps, "
                          "lr 0.05", adv, time.perf_counter() - t0)
        numbers["cw_comparison"] = {"torchattacks_success": cw_ta["success_rate"],
                                    "corrected_success": cw["success_rate"], "note": cw_note}
        # black box
        with bar.stage("Square"):
            t0 = time.perf_counter()
            spec = AttackSpec("square", "linf", eps, {"n_queries": settings.square_queries, "n_restarts": 1,
                                                      "seed": seed}, attack="Square")
            adv = run_attack(scored, spec, x, y, batch_size=batch_size, seed=seed, device=device, progress=False,
                             engine=engine)
            square = score("square", f"L-inf eps={eps:g}, {settings.square_queries} queries (black-box)", adv,
                           time.perf_counter() - t0, main_eps=True)
        # transfer
        transfer_acc = None
        if will_train:
            with bar.stage("train surrogate"):
                t0 = time.perf_counter()
                arch = train_cfg.model if train_cfg is not None else None
                epochs = settings.surrogate_epochs if surrogate_epochs is None else surrogate_epochs
                surrogate_model = train_surrogate(dataset, model=arch, epochs=epochs, seed=seed + 1, data_dir=data_dir,
                                                  device=device)
                surrogate_info = {"source": f"trained: CE {arch or _SURROGATE_MODELS.get(dataset)}, {epochs} epochs, "
                                  f"seed {seed + 1}", "train_seconds": round(time.perf_counter() - t0, 2)}
                if _num_outputs(surrogate_model, x, dev) != num_classes:
                    raise ValueError(f"surrogate: expected a model with {num_classes} outputs, got "
                                     f"{_num_outputs(surrogate_model, x, dev)}")
        if surrogate_model is not None:
            with bar.stage("transfer"):
                t0 = time.perf_counter()
                adv = adp.run_adaptive_attack(surrogate_model, "pgd-ce", x, y, eps=eps, steps=settings.pgd_steps,
                                              alpha=2.5 * eps / settings.pgd_steps, seed=seed, batch_size=batch_size,
                                              device=device, any_iterate=False)
                transfer = score("transfer", f"L-inf eps={eps:g}, PGD on the surrogate", adv, time.perf_counter() - t0,
                                 main_eps=True)
                transfer_acc = transfer["accuracy"]
                surrogate_info["clean_accuracy"] = float((predict(surrogate_model, x) == y).float().mean())
                surrogate_info["pgd_accuracy"] = float((predict(surrogate_model, adv) == y).float().mean())
            numbers["surrogate"] = surrogate_info
        # adaptive
        adaptive_accs: dict[str, float] = {}
        if ib_cfg is not None:
            with bar.stage("pgd-ib"):
                adaptive_accs["pgd-ib"] = pgd("pgd-ib", eps, name="pgd-ib")["accuracy"]
            with bar.stage("pgd-ib (mean CE, as pgd_mi)"):
                adaptive_accs["pgd-ib (mean CE)"] = pgd("pgd-ib (mean CE)", eps, name="pgd-ib",
                                                        ce_reduction="mean")["accuracy"]
        if ent_cfg is not None:
            with bar.stage("pgd-entropic"):
                adaptive_accs["pgd-entropic"] = pgd("pgd-entropic", eps, name="pgd-entropic")["accuracy"]
            with bar.stage("pgd-entropic (+penalty)"):
                adaptive_accs["pgd-entropic(+)"] = pgd("pgd-entropic(+)", eps, name="pgd-entropic",
                                                       entropic_penalty="add")["accuracy"]
        with bar.stage("PGD margin loss"):
            margin = pgd("pgd-margin", eps, name="pgd-margin")
    finally:
        bar.close()

    checks = [
        check_determinism(deterministic, eot_samples=eot_samples, max_abs_diff=max_diff),
        check_monotone_eps(grid, eps_accs, tol=tol),
        check_large_eps(grid, eps_accs, zero_tol=zero_tol),
        check_unbounded({"PGD eps=1": unb["success_rate"], "CW-L2": cw["success_rate"]}, success_tol=success_tol),
        check_iterative(pgd_acc, fgsm["accuracy"], tol=tol),
        check_steps_restarts(settings.steps_grid, steps_accs, restarts=settings.restarts,
                             restart_accuracy=restart["accuracy"], single_accuracy=pgd_acc, tol=tol),
        check_black_box(square["accuracy"], pgd_acc, tol=tol),
        check_transfer(transfer_acc, pgd_acc, tol=tol, reason=skip_transfer),
        check_adaptive(adaptive_accs, pgd_acc, tol=tol,
                       reason="the model has no IB configuration (pgd-ib) or entropic configuration (pgd-entropic)"),
        check_loss_functions(margin["accuracy"], pgd_acc, tol=tol),
    ]
    numbers["attacks"] = attacks
    strongest = min(main_attacks, key=lambda key: attacks[key]["accuracy"])
    numbers["worst_case"] = {
        "accuracy": float(robust_all.float().mean()), "eps": eps, "n": int(x.shape[0]), "attacks": main_attacks,
        "strongest_single": strongest, "strongest_single_accuracy": attacks[strongest]["accuracy"],
    }
    numbers["wall_time_s"] = round(time.perf_counter() - t_start, 2)
    report = AuditReport(checks=checks, numbers=numbers, config=config, out_dir=out)
    if out is not None:
        from ib_plugins._optional import is_available
        from ib_plugins.experiments import write_json

        if is_available("matplotlib"):
            extra = {f"FGSM eps={eps:g}": (eps, fgsm["accuracy"]), f"Square eps={eps:g}": (eps, square["accuracy"])}
            if transfer_acc is not None:
                extra[f"transfer eps={eps:g}"] = (eps, transfer_acc)
            for key_, acc_ in adaptive_accs.items():
                extra[f"{key_} eps={eps:g}"] = (eps, acc_)
            report.files["accuracy_vs_eps"] = str(_plot_curve(
                grid, eps_accs, out / "accuracy_vs_eps.png", xlabel="eps (L-inf)", title="Robust accuracy vs eps",
                extra=extra))
            report.files["accuracy_vs_steps"] = str(_plot_curve(
                settings.steps_grid, steps_accs, out / "accuracy_vs_steps.png", xlabel="PGD steps",
                title=f"Robust accuracy vs steps (eps={eps:g})",
                extra={f"{settings.restarts} restarts": (settings.pgd_steps, restart["accuracy"])}))
        write_json(out / "audit.json", report.to_dict())
        from ib_plugins.training import _atomic_write_text

        _atomic_write_text(out / "audit.md", report.to_markdown())
        _atomic_write_text(out / "audit.html", report.to_html())
        report.files.update({"audit.json": str(out / "audit.json"), "audit.md": str(out / "audit.md"),
                             "audit.html": str(out / "audit.html")})
    logger.info("audit of %s: %s", target_name, report.summary())
    return report


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _json_object(text: str) -> dict[str, Any]:
    """Argparse type: a JSON object with string keys, e.g. ``'{"num_classes": 10}'``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}', got {shown}")
    return value


def add_model_factory_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--model-factory``, ``--weights``, ``--factory-kwargs`` and ``--dataset`` (a user's model as code).

    ``ib-plugins evaluate`` and ``ib-plugins audit`` take them instead of a checkpoint; see
    :func:`ib_plugins.experiments.load_model_from_factory`.

    Args:
        parser: the (sub)parser.

    Returns:
        The same parser.

    Example:
        >>> p = add_model_factory_arguments(argparse.ArgumentParser())
        >>> a = p.parse_args(["--model-factory", "nets.py:cnn", "--factory-kwargs", '{"num_classes": 10}'])
        >>> a.model_factory, a.factory_kwargs, a.weights
        ('nets.py:cnn', {'num_classes': 10}, None)
    """
    add = parser.add_argument
    add("--model-factory", default=None, metavar="MODULE:FUNCTION",
        help="instead of a checkpoint, your own model: 'package.module:function' (importable from the current folder "
             "or PYTHONPATH) or 'path/to/file.py:function', called to build it; needs --dataset")
    add("--weights", default=None, metavar="FILE",
        help="state_dict for --model-factory (torch.save(model.state_dict(), FILE); read with weights_only=True; a "
             "checkpoint dict with a 'model' entry and an IBModel's 'model.' prefix are understood)")
    add("--factory-kwargs", type=_json_object, default=None, metavar="JSON",
        help="keyword arguments of the factory as a JSON object, e.g. '{\"num_classes\": 10}'")
    add("--dataset", default=None, help="test set of the --model-factory model, e.g. cifar10 (inputs in [0, 1])")
    return parser


def add_audit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``ib-plugins audit`` arguments to a (sub)parser; :func:`audit_command` runs them.

    Args:
        parser: e.g. ``sub.add_parser("audit", help=...)``.

    Returns:
        The same parser.

    Example:
        >>> p = add_audit_arguments(argparse.ArgumentParser())
        >>> a = p.parse_args(["ckpt.pt", "--quick", "--eps-grid", "0,0.1,0.5"])
        >>> a.checkpoint, a.quick, a.eps_grid, a.out
        ('ckpt.pt', True, [0.0, 0.1, 0.5], None)
    """
    add = parser.add_argument
    add("checkpoint", nargs="?", default=None,
        help="checkpoint.pt written by 'ib-plugins train' (or the demo); or use --model-factory")
    add("--quick", action="store_true", help="CI setting: 100 images, short grids, few steps (~1 min on 2 CPU cores)")
    add("--out", default=None,
        help="report folder (default: <checkpoint or --weights folder>/audit or audit-quick)")
    add("--eps", type=float, default=None, help="main L-inf radius (default: the dataset's IB-RAR budget)")
    add("--eps-grid", type=_floats, default=None,
        help="radii of the accuracy-vs-eps curve, strictly increasing, e.g. 0,0.05,0.1,0.2,0.5")
    add("--n", type=int, default=None, help="test images (default: 100 quick, 450 full)")
    add("--surrogate", default=None,
        help="checkpoint of an undefended surrogate for the transfer check, or 'none' (default: train one)")
    add("--surrogate-epochs", type=int, default=None,
        help="epochs of the trained surrogate (default: 5 quick, 10 full)")
    add("--eot-samples", type=int, default=8, help="forwards averaged when the eval forward is stochastic")
    add("--tol", type=float, default=0.03, help="tolerance of the comparisons (absolute accuracy, default 0.03)")
    add("--zero-tol", type=float, default=0.05, help="accuracy counted as ~0 at the largest eps (default 0.05)")
    add("--success-tol", type=float, default=0.02,
        help="tolerated shortfall of the unbounded attack from 100%% success (default 0.02)")
    add("--strict", action="store_true", help="exit with status 1 when any check warns")
    add("--seed", type=int, default=0)
    add("--batch-size", type=int, default=100)
    add("--data-dir", default=None)
    add("--device", default="cpu")
    add("--overwrite", action="store_true", help="replace a report folder of a different audit")
    add("--no-progress", action="store_true", help="hide the progress bar")
    add("--engine", choices=("builtin", "torchattacks"), default="builtin",
        help="engine of the torchattacks-described attacks (CW, Square): builtin (default) or torchattacks")
    add("--ema", action="store_true", help="audit the checkpoint's averaged weights (a run trained with --ema-decay)")
    add_model_factory_arguments(parser)
    return parser


def audit_command(args: argparse.Namespace) -> int:
    """Run ``ib-plugins audit`` from parsed :func:`add_audit_arguments` arguments and print the verdicts.

    Args:
        args: the parsed arguments.

    Returns:
        0, or 1 with ``--strict`` when a check warns. Bad input raises (ValueError,
        CheckpointError...), which the CLI turns into exit status 2.

    Example:
        >>> args = add_audit_arguments(argparse.ArgumentParser()).parse_args(["/nonexistent.pt"])
        >>> try:
        ...     audit_command(args)
        ... except ValueError as err:
        ...     print(type(err).__name__)
        CheckpointError
    """
    from ib_plugins.experiments import _check_model_source

    factory = getattr(args, "model_factory", None)
    _check_model_source(args.checkpoint, model_factory=factory, weights=getattr(args, "weights", None),
                        factory_kwargs=getattr(args, "factory_kwargs", None), dataset=getattr(args, "dataset", None))
    target: Any = args.checkpoint
    name = None
    folder = Path(args.checkpoint).parent if args.checkpoint is not None else Path()
    if factory is not None:
        from ib_plugins.experiments import _dataset_info, load_model_from_factory
        from ib_plugins.training import _device

        _dataset_info(args.dataset)  # an unknown dataset is named before any user code runs
        _device(args.device)
        target = load_model_from_factory(factory, weights=args.weights, factory_kwargs=args.factory_kwargs,
                                         map_location=args.device)
        name = factory
        folder = Path(args.weights).parent if args.weights is not None else Path()
    out = args.out or str(folder / ("audit-quick" if args.quick else "audit"))
    surrogate: Any = args.surrogate
    if isinstance(surrogate, str) and surrogate.lower() == "none":
        surrogate = False
    report = run_audit(
        target, out_dir=out, quick=args.quick, dataset=getattr(args, "dataset", None), name=name,
        eps_grid=args.eps_grid, surrogate=surrogate, eps=args.eps, n=args.n, surrogate_epochs=args.surrogate_epochs,
        eot_samples=args.eot_samples, tol=args.tol, zero_tol=args.zero_tol, success_tol=args.success_tol,
        seed=args.seed, batch_size=args.batch_size, data_dir=args.data_dir, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress, engine=args.engine, ema=args.ema,
    )
    print(report.summary())
    for check in report.checks:
        print(f"  {check.status.upper():<5} {check.title}: {check.message}")
    print(f"Report: {Path(out) / 'audit.md'}, {Path(out) / 'audit.html'}, {Path(out) / 'audit.json'}")
    return 1 if args.strict and report.warned else 0
