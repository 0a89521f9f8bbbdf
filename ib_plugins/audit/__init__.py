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

The package, one concept per module: :mod:`~ib_plugins.audit.checks` (the checks),
:mod:`~ib_plugins.audit.report` (:class:`AuditReport` and its writers), :mod:`~ib_plugins.audit.runner`
(:func:`run_audit`) and :mod:`~ib_plugins.audit.command` (the command line).
"""

from __future__ import annotations

from ib_plugins.audit.checks import (
    CHECK_KINDS,
    CHECKS,
    STATUSES,
    VERDICTS,
    CheckResult,
    check_adaptive,
    check_black_box,
    check_determinism,
    check_iterative,
    check_large_eps,
    check_loss_functions,
    check_monotone_eps,
    check_steps_restarts,
    check_transfer,
    check_unbounded,
)
from ib_plugins.audit.command import add_audit_arguments, add_model_factory_arguments, audit_command
from ib_plugins.audit.report import AuditReport
from ib_plugins.audit.runner import default_eps_grid, run_audit, train_surrogate

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
