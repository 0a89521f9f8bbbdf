"""The gradient-masking checks: :class:`CheckResult` and the ``check_*`` functions (pure functions of numbers)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ib_plugins._markdown import md_text

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
