"""Evaluation results: :class:`AttackResult`, :class:`SuiteResult` and :func:`compare_markdown`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ib_plugins._markdown import md_cell, md_text
from ib_plugins.evaluation.suites import AttackSpec

# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * value:.2f}"


def _eps_str(spec: AttackSpec) -> str:
    if spec.eps is not None:
        return f"{spec.eps:.4g}"
    if spec.fixed_c_cw:
        return f"none (fixed c={spec.kwargs.get('c', 1)})"
    return "none (minimum-norm)" if spec.attack == "adaptive:cw-l2" else "none"


def _l2_str(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class AttackResult:
    """The outcome of one attack of :func:`evaluate_suite`.

    Attributes:
        spec: the attack that was run.
        n: number of samples.
        n_robust: samples still classified correctly after the attack.
        n_clean_correct: samples classified correctly before the attack.
        n_flipped: originally correct samples that the attack made wrong (successes).
        seconds: wall time of the attack.
        max_linf: largest L-inf perturbation over the samples.
        mean_l2: mean L2 norm of the perturbations.
        median_l2_success: median L2 norm of the perturbations of the successes (originally correct
            samples the attack flipped); None when there were none. For the unbounded and fixed-c
            CW attacks this, not the accuracy, says how strong the attack was.

    Example:
        >>> r = AttackResult(AttackSpec("fgsm", "linf", 0.1, {}), 10, 4, 8, 4, 0.1, 0.1, 0.5)
        >>> r.accuracy, r.success_rate
        (0.4, 0.5)
    """

    spec: AttackSpec
    n: int
    n_robust: int
    n_clean_correct: int
    n_flipped: int
    seconds: float
    max_linf: float
    mean_l2: float
    median_l2_success: float | None = None

    @property
    def name(self) -> str:
        """The attack's name."""
        return self.spec.name

    @property
    def accuracy(self) -> float:
        """Accuracy over all samples after the attack (IB-RAR's metric)."""
        return self.n_robust / self.n

    @property
    def success_rate(self) -> float:
        """Share of the originally correct samples the attack flipped (entropic metric; NaN if none)."""
        return self.n_flipped / self.n_clean_correct if self.n_clean_correct else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (``success_rate`` is ``None`` when undefined).

        Returns:
            A dict of plain Python values.

        Example:
            >>> r = AttackResult(AttackSpec("fgsm", "linf", 0.1, {}), 2, 0, 0, 0, 0.0, 0.1, 0.2)
            >>> r.to_dict()["success_rate"] is None
            True
        """
        return {
            **self.spec.to_dict(),
            "accuracy": self.accuracy,
            "success_rate": _nan_to_none(self.success_rate),
            "n": self.n,
            "n_robust": self.n_robust,
            "n_clean_correct": self.n_clean_correct,
            "n_flipped": self.n_flipped,
            "seconds": self.seconds,
            "max_linf": self.max_linf,
            "mean_l2": self.mean_l2,
            "median_l2_success": self.median_l2_success,
            "description": self.spec.describe(),
        }


def _attack_result(
    spec: AttackSpec, x: Tensor, y: Tensor, adv: Tensor, clean_ok: Tensor, adv_ok: Tensor, seconds: float
) -> AttackResult:
    """Counts and perturbation norms of one attack (shared by the suite and the adaptive evaluators)."""
    linf, l2 = _perturbation_norms(adv, x)
    return _result_from_rows(spec, clean_ok, adv_ok, linf, l2, seconds)


def _perturbation_norms(adv: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-example L-inf and L2 norms of ``adv - x`` (float32, on ``x``'s device)."""
    delta = (adv - x).flatten(1).float()
    return delta.abs().amax(dim=1), delta.norm(dim=1)


def _result_from_rows(
    spec: AttackSpec, clean_ok: Tensor, adv_ok: Tensor, linf: Tensor, l2: Tensor, seconds: float
) -> AttackResult:
    flipped = clean_ok & ~adv_ok
    return AttackResult(
        spec=spec,
        n=int(adv_ok.shape[0]),
        n_robust=int(adv_ok.sum()),
        n_clean_correct=int(clean_ok.sum()),
        n_flipped=int(flipped.sum()),
        seconds=seconds,
        max_linf=float(linf.max()),
        mean_l2=float(l2.mean()),
        median_l2_success=float(l2[flipped].median()) if bool(flipped.any()) else None,
    )


def _fixed_c_note(specs: Sequence[AttackSpec]) -> list[str]:
    """Footnote lines for tables that show torchattacks' fixed-c CW or the corrected CW-L2."""
    notes = []
    for spec in {s.name: s for s in specs}.values():
        if spec.eps is None:
            notes.append(
                f"{md_text(spec.name)}: {md_text(spec.describe())}; its accuracy is not comparable to an eps-bounded "
                "column, the median L2 norm of its successful perturbations says how far it had to go."
            )
    return notes


@dataclass(frozen=True)
class SuiteResult:
    """Clean accuracy and the per-attack results of :func:`evaluate_suite`.

    Attributes:
        n: number of samples.
        n_clean_correct: samples classified correctly without attack.
        attacks: one :class:`AttackResult` per spec, in order.
        seed: the seed the attacks ran with.
        adversarial: ``name -> adversarial examples`` when requested (not in :meth:`to_dict`).
        engine: the attack engine that ran the torchattacks-described attacks (``"builtin"`` or
            ``"torchattacks"``).
        correct: per-sample results (not in :meth:`to_dict`): ``"clean"`` and each attack's name ->
            a bool tensor ``[N]``, True where the sample is classified correctly (without attack,
            or after that attack), for paired comparisons of models on the same samples.

    Example:
        >>> res = SuiteResult(n=4, n_clean_correct=3, attacks=[])
        >>> res.clean_accuracy
        0.75
    """

    n: int
    n_clean_correct: int
    attacks: list[AttackResult]
    seed: int = 0
    adversarial: Mapping[str, Tensor] = field(default_factory=dict, repr=False, compare=False)
    engine: str = "builtin"
    correct: Mapping[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def clean_accuracy(self) -> float:
        """Accuracy without attack."""
        return self.n_clean_correct / self.n

    def __getitem__(self, name: str) -> AttackResult:
        """The result of the attack called ``name``.

        Raises:
            ValueError: no attack has that name (the message lists them).
        """
        for r in self.attacks:
            if r.name == name:
                return r
        raise ValueError(f"name: expected one of {', '.join(repr(r.name) for r in self.attacks)}, got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary.

        Returns:
            ``{"n", "n_clean_correct", "clean_accuracy", "seed", "engine", "attacks": [...]}``.

        Example:
            >>> import json
            >>> json.dumps(SuiteResult(n=2, n_clean_correct=1, attacks=[]).to_dict())
            '{"n": 2, "n_clean_correct": 1, "clean_accuracy": 0.5, "seed": 0, "engine": "builtin", "attacks": []}'
        """
        return {
            "n": self.n,
            "n_clean_correct": self.n_clean_correct,
            "clean_accuracy": self.clean_accuracy,
            "seed": self.seed,
            "engine": self.engine,
            "attacks": [r.to_dict() for r in self.attacks],
        }

    def to_markdown(self) -> str:
        """A markdown table with a clean row and one row per attack.

        Accuracy is over all samples; success rate over the originally correct ones; the median L2
        norm is over the successful perturbations. Attacks without a radius (torchattacks' fixed-c
        CW, the corrected ``cw-l2``) are described in a note under the table.

        Returns:
            The table, and the note when there is one (no trailing newline).

        Example:
            >>> print(SuiteResult(n=4, n_clean_correct=3, attacks=[]).to_markdown())
            | Attack | Norm | eps | Accuracy (%) | Success rate (%) | Robust / N | Flipped / correct | Median L2 of successes | Time (s) |
            |---|---|---|---|---|---|---|---|---|
            | clean | - | - | 75.00 | - | 3 / 4 | - | - | - |
        """
        lines = [
            "| Attack | Norm | eps | Accuracy (%) | Success rate (%) | Robust / N | Flipped / correct | "
            "Median L2 of successes | Time (s) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| clean | - | - | {_pct(self.clean_accuracy)} | - | {self.n_clean_correct} / {self.n} | - | - | - |",
        ]
        for r in self.attacks:
            lines.append(
                f"| {md_cell(r.name)} | {md_cell(r.spec.norm)} | {_eps_str(r.spec)} | {_pct(r.accuracy)} | "
                f"{_pct(r.success_rate)} | {r.n_robust} / {r.n} | {r.n_flipped} / {r.n_clean_correct} | "
                f"{_l2_str(r.median_l2_success)} | {r.seconds:.1f} |"
            )
        notes = _fixed_c_note([r.spec for r in self.attacks])
        return "\n".join(lines + ([""] + notes if notes else []))


def compare_markdown(results: Mapping[str, SuiteResult]) -> str:
    """A side-by-side markdown table: one row per model, columns Clean + attacks (accuracy %).

    Attack columns are the union of the attack names in order of first appearance; a model
    without an attack shows ``-``. A column of an attack without a radius (torchattacks' fixed-c
    CW, the corrected ``cw-l2``) is headed with what it is, its cells add the median L2 norm of the
    successful perturbations, and a note under the table describes it.

    Args:
        results: ``model name -> SuiteResult``.

    Returns:
        The table (no trailing newline).

    Raises:
        TypeError: a value is not a :class:`SuiteResult`.
        ValueError: ``results`` is empty.

    Example:
        >>> spec = AttackSpec("fgsm", "linf", 0.03, {})
        >>> a = SuiteResult(n=4, n_clean_correct=4, attacks=[AttackResult(spec, 4, 1, 4, 3, 0.0, 0.03, 0.1)])
        >>> print(compare_markdown({"CE": a}))
        | Model | Clean | fgsm |
        |---|---|---|
        | CE | 100.00 | 25.00 |
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError(f"results: expected a non-empty mapping name -> SuiteResult, got {results!r}")
    columns: dict[str, AttackSpec] = {}
    for key, res in results.items():
        if not isinstance(res, SuiteResult):
            raise TypeError(f"results[{key!r}]: expected a SuiteResult, got {type(res).__name__}")
        for r in res.attacks:
            columns.setdefault(r.name, r.spec)

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [
        row(["Model", "Clean", *(_column_title(name, spec) for name, spec in columns.items())]),
        row(["---"] * (len(columns) + 2)).replace(" ", ""),
    ]
    for key, res in results.items():
        by_name = {r.name: r for r in res.attacks}
        cells = [_accuracy_cell(by_name[c]) if c in by_name else "-" for c in columns]
        lines.append(row([md_cell(key), _pct(res.clean_accuracy), *cells]))
    notes = _fixed_c_note(list(columns.values()))
    return "\n".join(lines + ([""] + notes if notes else []))


def _column_title(name: str, spec: AttackSpec) -> str:
    """A table column's title: the attack's name, plus what it is when it has no radius."""
    if spec.fixed_c_cw:
        return f"{md_cell(name)} (fixed c={spec.kwargs.get('c', 1)})"
    if spec.eps is None:
        return f"{md_cell(name)} (min-norm)"
    return md_cell(name)


def _accuracy_cell(r: AttackResult) -> str:
    """Accuracy (%), with the median L2 of the successes for attacks without a radius."""
    if r.spec.eps is not None:
        return _pct(r.accuracy)
    l2 = "no success" if r.median_l2_success is None else f"median L2 {r.median_l2_success:.3g}"
    return f"{_pct(r.accuracy)} ({l2})"
