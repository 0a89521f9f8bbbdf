"""Robustness evaluation: the IB-RAR and entropic-retraining attack suites, run safely (spec §2.6, §4.4).

Two attack suites are registered, each with named budgets (see :func:`default_budget`):

* ``"ibrar"``: the IB-RAR evaluation of ``test.py`` (torchattacks 3.3.0 calls, spec §2.6):
  ``pgd``, ``cw``, ``fgsm``, ``fab``, ``nifgsm``. Budget ``"ibrar-code"`` is what the authors' code
  ran (eps 0.03, PGD step ``2.3·eps/steps``); ``"paper"`` is what the paper states (eps 8/255, PGD
  step 2/255). The metric is the accuracy over **all** samples after the attack.
* ``"entropic"``: the entropic-retraining evaluation (foolbox attacks in the paper, re-created
  with torchattacks and foolbox's default step sizes): ``linf-pgd``, ``bim``, ``fgsm``, ``cw``,
  ``l2-pgd``; the single budget ``"paper"``. The metric is the attack **success rate over the
  originally correctly classified** samples.

:func:`evaluate_suite` reports both metrics for every attack, so either paper's tables can be
filled from one run. :func:`run_attack` runs one attack so that it cannot leak state:

* the global torch RNG is forked and seeded locally (torchattacks' FAB/APGD/Square call
  ``torch.manual_seed`` and PGD draws its random start from the global RNG), so the caller's RNG
  state is unchanged and the same ``seed`` gives the same adversarial examples;
* the train/eval flag of every submodule is restored in a ``finally`` block, also when the
  attack raises;
* every :class:`~ib_plugins.wrap.IBModel` inside the model stops recording for the duration;
* inputs outside ``[0, 1]`` raise ``ValueError`` (torchattacks would silently clamp them) and
  labels are checked against the model's number of outputs;
* the attack is built on the right device (torchattacks fixes it at construction).

The attacks run on the built-in engine (:mod:`ib_plugins.attack_engine`, plain torch with torchattacks'
semantics) unless ``engine="torchattacks"``; torchattacks is imported only then, matplotlib only in
:func:`plot_accuracy_vs_steps` and tqdm (progress bars) only when present.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    >>> specs = build_suite("ibrar", dataset="digits", num_classes=3, attacks=["fgsm"])
    >>> result = evaluate_suite(model, x, y, specs, progress=False)
    >>> [a.name for a in result.attacks], 0.0 <= result.attacks[0].accuracy <= result.clean_accuracy
    (['fgsm'], True)
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import numbers
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Union

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._markdown import md_cell, md_text
from ib_plugins._optional import require
from ib_plugins.data import get_dataset_info
from ib_plugins.wrap import _inference_modes

__all__ = [
    "AttackSpec",
    "Budget",
    "SUITES",
    "EXTRA_ATTACKS",
    "ENGINES",
    "batch_seed",
    "batch_bounds",
    "list_suites",
    "list_budgets",
    "list_attacks",
    "default_budget",
    "build_suite",
    "run_attack",
    "AttackResult",
    "SuiteResult",
    "evaluate_suite",
    "compare_markdown",
    "random_noise",
    "noise_accuracy",
    "accuracy_vs_steps",
    "misclassification_tendency",
    "tendency_markdown",
    "plot_accuracy_vs_steps",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_PURPOSE = "ib_plugins.evaluation"

# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

#: Read-only mapping ``suite -> attack names`` (in the order the papers' tables list them).
SUITES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ibrar": ("pgd", "cw", "fgsm", "fab", "nifgsm"),
        "entropic": ("linf-pgd", "bim", "fgsm", "cw", "l2-pgd"),
    }
)

_BUDGETS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "ibrar": ("ibrar-code", "paper"),
        "entropic": ("paper",),
    }
)

#: Attacks any suite accepts besides its own (``attacks=[..., "cw-l2"]``): the corrected CW-L2 of
#: :mod:`ib_plugins.adaptive` (true class masked in the margin; binary search over ``c``).
EXTRA_ATTACKS: tuple[str, ...] = ("cw-l2",)
_CWL2 = {"c": 1.0, "kappa": 0.0, "lr": 0.05, "search_steps": 5}

_SUITE_ALIASES = {"ib-rar": "ibrar", "entropic-retraining": "entropic"}
_BUDGET_ALIASES = {"code": "ibrar-code", "ibrar-code": "ibrar-code", "ib-rar-code": "ibrar-code"}

#: attack name -> torchattacks class name (used when AttackSpec.attack is None).
_DEFAULT_CLASS: Mapping[str, str] = MappingProxyType(
    {
        "pgd": "PGD",
        "linf-pgd": "PGD",
        "l2-pgd": "PGDL2",
        "fgsm": "FGSM",
        "bim": "BIM",
        "cw": "CW",
        "fab": "FAB",
        "nifgsm": "NIFGSM",
    }
)
#: torchattacks classes that take no ``eps`` (unbounded minimal-perturbation attacks).
_UNBOUNDED = frozenset({"CW"})
_NORMS = ("linf", "l2")

# Dataset groups for the budgets.
_CIFAR_LIKE = ("cifar10", "cifar100", "svhn")
_MNIST_LIKE = ("mnist", "fashion-mnist")

# IB-RAR reference values (spec §2.6, A9).
_CODE_EPS = 0.03
_CODE_PGD_FACTOR = 2.3  # PGD alpha = 2.3 * eps / steps
_CODE_NIFGSM_ALPHA = 2 / 255
_PAPER_EPS = 8 / 255
_PAPER_ALPHA = 2 / 255

# Foolbox 3 defaults used by the entropic suite (rel. step = alpha / eps).
_FB_LINF_PGD_REL, _FB_LINF_PGD_STEPS = 0.01 / 0.3, 40
_FB_L2_PGD_REL, _FB_L2_PGD_STEPS = 0.025, 50
_FB_BIM_REL, _FB_BIM_STEPS = 0.2, 10
_ENTROPIC_CW = {"c": 1.0, "kappa": 0.0, "lr": 0.01}
_ENTROPIC_CW_STEPS = 100


def _canonical(value: object, *, arg: str, valid: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{arg}: expected a str (one of {', '.join(map(repr, valid))}), got {type(value).__name__}")
    key = value.strip().lower().replace("_", "-")
    if aliases:
        key = aliases.get(key, key)
    if key not in valid:
        raise ValueError(f"{arg}: expected one of {', '.join(map(repr, valid))}, got {value!r}")
    return key


def list_suites() -> list[str]:
    """Names of the registered attack suites.

    Returns:
        The suite names.

    Example:
        >>> list_suites()
        ['ibrar', 'entropic']
    """
    return list(SUITES)


def list_budgets(suite: str = "ibrar") -> list[str]:
    """Names of the budgets a suite knows.

    Args:
        suite: a name from :func:`list_suites`.

    Returns:
        The budget names; the first one is the suite's default.

    Raises:
        ValueError: unknown ``suite`` (the message lists the valid ones).

    Example:
        >>> list_budgets("ibrar"), list_budgets("entropic")
        (['ibrar-code', 'paper'], ['paper'])
    """
    return list(_BUDGETS[_canonical(suite, arg="suite", valid=tuple(SUITES), aliases=_SUITE_ALIASES)])


def list_attacks(suite: str = "ibrar", *, extras: bool = False) -> list[str]:
    """Names of the attacks of a suite, in table order.

    Args:
        suite: a name from :func:`list_suites`.
        extras: also list the attacks every suite accepts besides its own (:data:`EXTRA_ATTACKS`).

    Returns:
        The attack names.

    Raises:
        ValueError: unknown ``suite``.

    Example:
        >>> list_attacks("entropic")
        ['linf-pgd', 'bim', 'fgsm', 'cw', 'l2-pgd']
        >>> list_attacks("ibrar", extras=True)[-1]
        'cw-l2'
    """
    names = list(SUITES[_canonical(suite, arg="suite", valid=tuple(SUITES), aliases=_SUITE_ALIASES)])
    return names + list(EXTRA_ATTACKS) if extras else names


# --------------------------------------------------------------------------------------------------
# Attack specifications and budgets
# --------------------------------------------------------------------------------------------------


def _check_eps(eps: object, norm: str, *, arg: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"{arg}: expected a float, got {type(eps).__name__}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{arg}: expected a finite value >= 0, got {eps!r}")
    if norm == "linf" and eps > 1:
        raise ValueError(f"{arg}: expected an L-inf radius in [0, 1] for inputs in [0, 1], got {eps!r}")
    return eps


#: Keyword arguments that count iterations, restarts, queries or samples: an int >= 1 when given
#: (torchattacks, AutoAttack and the adaptive attacks loop ``range(n)`` over them, so 0 would
#: silently skip the attack and a negative or float value fail mid-evaluation).
_COUNT_KWARGS = (
    "steps", "n_restarts", "n_queries", "n_iter", "restarts", "eot_iter", "eot_samples", "search_steps",
    "n_target_classes",
)


def _check_count(value: object, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{arg}: expected an int >= 1 (a count of iterations), got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{arg}: expected an int >= 1 (a count of iterations), got {value}")
    return int(value)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite: a name, its threat model and the torchattacks configuration.

    Attributes:
        name: the attack's name in reports, e.g. ``"pgd"``.
        norm: ``"linf"`` or ``"l2"``, the norm of ``eps``.
        eps: the perturbation radius; ``None`` for unbounded attacks (CW).
        kwargs: further constructor arguments of the torchattacks class (read-only; never
            ``model`` or ``eps``).
        attack: the torchattacks class name; ``None`` picks it from ``name`` (``pgd``/``linf-pgd``
            → ``PGD``, ``l2-pgd`` → ``PGDL2``, ``fgsm`` → ``FGSM``, ``bim`` → ``BIM``, ``cw`` →
            ``CW``, ``fab`` → ``FAB``, ``nifgsm`` → ``NIFGSM``).

    Raises:
        ValueError: bad ``norm``; ``eps`` not finite, negative, or (L-inf) above 1; ``eps`` given for
            CW or missing for a bounded attack; ``kwargs`` holding ``model``/``eps``; an unknown
            ``name`` without ``attack`` (the message lists the known names); an iteration count in
            ``kwargs`` (``steps``, ``n_restarts``, ``n_queries``, ``n_iter``, ``restarts``,
            ``eot_iter``, ``eot_samples``, ``search_steps``, ``n_target_classes``) below 1.
        TypeError: a field of the wrong type, or such a count that is not an int.

    Example:
        >>> spec = AttackSpec("fgsm", "linf", 0.03, {})
        >>> spec.attack_class, spec.constructor_kwargs()
        ('FGSM', {'eps': 0.03})
        >>> AttackSpec("cw", "l2", None, {"c": 0.1}).constructor_kwargs()
        {'c': 0.1}
    """

    name: str
    norm: str
    eps: float | None
    kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)
    attack: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name: expected a non-empty str, got {self.name!r}")
        norm = _canonical(self.norm, arg="norm", valid=_NORMS, aliases={"inf": "linf", "l-inf": "linf"})
        object.__setattr__(self, "norm", norm)
        if self.attack is None:
            key = self.name.strip().lower().replace("_", "-")
            if key not in _DEFAULT_CLASS:
                raise ValueError(
                    f"name: no torchattacks class is known for {self.name!r}; pass attack='<class name>' "
                    f"or use one of {', '.join(map(repr, _DEFAULT_CLASS))}"
                )
            object.__setattr__(self, "attack", _DEFAULT_CLASS[key])
        elif not isinstance(self.attack, str) or not self.attack:
            raise TypeError(f"attack: expected a torchattacks class name (str) or None, got {self.attack!r}")
        if not isinstance(self.kwargs, Mapping):
            raise TypeError(f"kwargs: expected a mapping, got {type(self.kwargs).__name__}")
        bad = [k for k in ("model", "eps") if k in self.kwargs]
        if bad:
            raise ValueError(
                f"kwargs: expected no {', '.join(map(repr, bad))} (set the eps field), got {dict(self.kwargs)!r}"
            )
        for key in _COUNT_KWARGS:
            if key in self.kwargs:
                _check_count(self.kwargs[key], f"kwargs[{key!r}]")
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        if self.attack in _UNBOUNDED:
            if self.eps is not None:
                raise ValueError(f"eps: {self.attack} is an unbounded attack, expected eps=None, got {self.eps!r}")
        elif self.eps is None:
            if self.attack in _DEFAULT_CLASS.values():
                raise ValueError(f"eps: {self.attack} needs a perturbation radius, got None")
        else:
            object.__setattr__(self, "eps", _check_eps(self.eps, norm))

    @property
    def attack_class(self) -> str:
        """The torchattacks class name (never None after construction)."""
        return str(self.attack)

    def describe(self) -> str:
        """What the attack is, in one line, for tables and reports.

        Norm-bounded attacks give their norm and radius. torchattacks' ``CW`` is a **fixed-c**
        CW-L2 (one constant ``c``, a fixed number of Adam steps, an early abort): it is neither
        norm-bounded nor a minimum-norm attack, so its accuracy is not comparable to an
        ε-bounded column; the description says so and gives its settings.

        Returns:
            The description.

        Example:
            >>> AttackSpec("cw", "l2", None, {"c": 0.1, "kappa": 0, "steps": 200, "lr": 0.1}).describe()
            'fixed-c CW-L2 as in the paper (torchattacks CW, c=0.1, kappa=0, 200 steps, lr 0.1; not norm-bounded, not minimum-norm)'
            >>> AttackSpec("fgsm", "linf", 0.03).describe()
            'L-inf, eps=0.03'
        """
        kw = dict(self.kwargs)
        if self.attack == "CW":
            settings = ", ".join(
                [f"c={kw.get('c', 1)}", f"kappa={kw.get('kappa', 0)}", f"{kw.get('steps', 50)} steps",
                 f"lr {kw.get('lr', 0.01)}"]
            )
            return f"fixed-c CW-L2 as in the paper (torchattacks CW, {settings}; not norm-bounded, not minimum-norm)"
        if self.attack == "adaptive:cw-l2":
            search = kw.get("search_steps", 1)
            c_text = f"c from a {search}-step binary search from {kw.get('c', 1.0)}" if search > 1 else f"c={kw.get('c', 1.0)}"
            return (f"CW-L2 with the corrected margin ({c_text}, {kw.get('steps', 100)} steps, lr {kw.get('lr', 0.01)}; "
                    "unbounded, minimum-norm)")
        if self.eps is None:
            return f"{'L-inf' if self.norm == 'linf' else 'L2'}, no radius"
        return f"{'L-inf' if self.norm == 'linf' else 'L2'}, eps={self.eps:.4g}"

    @property
    def fixed_c_cw(self) -> bool:
        """Whether this is torchattacks' fixed-c CW (reports flag its column)."""
        return self.attack == "CW"

    def constructor_kwargs(self) -> dict[str, Any]:
        """The keyword arguments passed to the torchattacks class (``eps`` included when bounded).

        Returns:
            A new dict.

        Example:
            >>> AttackSpec("pgd", "linf", 0.03, {"steps": 10}).constructor_kwargs()
            {'eps': 0.03, 'steps': 10}
        """
        out: dict[str, Any] = {} if self.eps is None else {"eps": self.eps}
        out.update(self.kwargs)
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description.

        Returns:
            ``{"name", "attack", "norm", "eps", "kwargs"}``.

        Example:
            >>> AttackSpec("fgsm", "linf", 0.1, {}).to_dict()["attack"]
            'FGSM'
        """
        return {
            "name": self.name,
            "attack": self.attack,
            "norm": self.norm,
            "eps": self.eps,
            "kwargs": dict(self.kwargs),
        }


@dataclass(frozen=True)
class Budget:
    """The perturbation budget of one suite on one dataset (see :func:`default_budget`).

    Attributes:
        suite: ``"ibrar"`` or ``"entropic"``.
        name: the budget's name (``"ibrar-code"`` or ``"paper"``).
        dataset: canonical dataset name.
        linf_eps: L-inf radius of the L-inf attacks.
        l2_eps: L2 radius of the L2 attacks (``None`` for the IB-RAR suite, which has none).
        pgd_alpha: fixed PGD step size, or ``None`` for the code rule ``2.3 * eps / steps``
            (IB-RAR ``ibrar-code``) or the foolbox relative step (entropic).
        nifgsm_alpha: NI-FGSM step size (IB-RAR suite only).
        note: where the values come from.

    Example:
        >>> b = default_budget("cifar10", "ibrar", "ibrar-code")
        >>> b.linf_eps, round(b.pgd_step(10), 4)
        (0.03, 0.0069)
    """

    suite: str
    name: str
    dataset: str
    linf_eps: float
    l2_eps: float | None
    pgd_alpha: float | None
    nifgsm_alpha: float | None
    note: str

    def pgd_step(self, steps: int) -> float:
        """The L-inf PGD step size for ``steps`` iterations.

        Args:
            steps: number of PGD iterations (``>= 1``).

        Returns:
            ``pgd_alpha`` when fixed; ``2.3 * eps / steps`` for the IB-RAR code budget; the foolbox
            relative step ``eps / 30`` for the entropic suite.

        Raises:
            ValueError: ``steps < 1``.

        Example:
            >>> default_budget("cifar10", "ibrar", "paper").pgd_step(50) == 2 / 255
            True
        """
        steps = _check_int(steps, "steps", minimum=1)
        if self.pgd_alpha is not None:
            return self.pgd_alpha
        if self.suite == "ibrar":
            return _CODE_PGD_FACTOR * self.linf_eps / steps
        return _FB_LINF_PGD_REL * self.linf_eps


def default_budget(dataset: str = "cifar10", suite: str = "ibrar", budget: str | None = None) -> Budget:
    """The perturbation budget of a suite on a dataset.

    IB-RAR suite (L-inf radius eps, PGD step α, NI-FGSM step; CW is unbounded L2):

    * cifar10, cifar100, svhn, tiny-imagenet: ``"ibrar-code"`` eps 0.03, PGD α = 2.3·eps/n,
      NI-FGSM α = 2/255; ``"paper"`` eps 8/255, PGD α = NI-FGSM α = 2/255.
    * mnist, fashion-mnist: ``"ibrar-code"`` eps 0.1, PGD α = 2.3·eps/n, NI-FGSM α ≈ 0.0261;
      ``"paper"`` eps 0.3, PGD α = NI-FGSM α = 0.075.
    * digits: ``"ibrar-code"`` eps 0.1, PGD α = 2.3·eps/n, NI-FGSM α ≈ 0.0261; ``"paper"`` eps 0.1,
      PGD α = NI-FGSM α = 0.025.

    The CIFAR-like values are the spec's (§2.6, A9). IB-RAR never evaluated MNIST-like data:
    there ``"ibrar-code"`` keeps the code's step rules at eps 0.1 (NI-FGSM α scaled to keep the
    code's α/eps = (2/255)/0.03), and ``"paper"`` uses the standard MNIST radius 0.3 with the
    paper's α = eps/4. On the 8x8 digits (16 grey levels) both the CIFAR radius (≈ half a grey
    level) and 0.3 are meaningless, so both budgets use eps 0.1 (≈ 1.6 grey levels).

    Entropic suite (budget ``"paper"`` only; spec §4.4), L-inf / L2 radii:

    * mnist, fashion-mnist: 0.3 / 4.5 (paper);
    * cifar10, cifar100, svhn: 0.03 / 0.95 (paper's CIFAR values);
    * tiny-imagenet: 0.03 / 1.9 (twice the CIFAR L2 radius for 4x the pixels: same RMS per pixel);
    * digits: 0.1 / 0.45 (keeps L2 / (L-inf·√d) ≈ 0.55, as MNIST's 0.54 and CIFAR's 0.57).

    Step sizes follow foolbox 3's defaults (see :func:`build_suite`).

    Args:
        dataset: a dataset name (:func:`ib_plugins.data.list_datasets`).
        suite: ``"ibrar"`` or ``"entropic"``.
        budget: a name from :func:`list_budgets`; ``None`` = the suite's default (``"ibrar-code"``
            for IB-RAR, ``"paper"`` for entropic).

    Returns:
        The :class:`Budget`.

    Raises:
        ValueError: unknown dataset, suite or budget (the message lists the valid ones).

    Example:
        >>> default_budget("cifar10", "ibrar", "paper").linf_eps == 8 / 255
        True
        >>> default_budget("mnist", "entropic").l2_eps
        4.5
    """
    key = get_dataset_info(dataset).name
    suite = _canonical(suite, arg="suite", valid=tuple(SUITES), aliases=_SUITE_ALIASES)
    valid = _BUDGETS[suite]
    budget = valid[0] if budget is None else _canonical(budget, arg="budget", valid=valid, aliases=_BUDGET_ALIASES)
    if suite == "ibrar":
        if key in _CIFAR_LIKE or key == "tiny-imagenet":
            if budget == "ibrar-code":
                return Budget(suite, budget, key, _CODE_EPS, None, None, _CODE_NIFGSM_ALPHA,
                              "IB-RAR test.py (spec §2.6): eps 0.03, PGD alpha 2.3*eps/steps, NIFGSM alpha 2/255")
            return Budget(suite, budget, key, _PAPER_EPS, None, _PAPER_ALPHA, _PAPER_ALPHA,
                          "IB-RAR paper text: eps 8/255, alpha 2/255")
        eps_code = 0.1
        eps_paper = 0.3 if key in _MNIST_LIKE else 0.1
        if budget == "ibrar-code":
            nif = eps_code * _CODE_NIFGSM_ALPHA / _CODE_EPS
            return Budget(suite, budget, key, eps_code, None, None, nif,
                          f"library choice for {key}: eps 0.1 with the code's step rules (not in the paper)")
        return Budget(suite, budget, key, eps_paper, None, eps_paper / 4, eps_paper / 4,
                      f"library choice for {key}: eps {eps_paper:g}, alpha eps/4 (paper ratio; not in the paper)")
    if key in _MNIST_LIKE:
        return Budget(suite, budget, key, 0.3, 4.5, None, None, "entropic paper §V: MNIST eps 0.3 (Linf), 4.5 (L2)")
    if key in _CIFAR_LIKE:
        return Budget(suite, budget, key, 0.03, 0.95, None, None, "entropic paper §V: CIFAR eps 0.03 (Linf), 0.95 (L2)")
    if key == "tiny-imagenet":
        return Budget(suite, budget, key, 0.03, 1.9, None, None,
                      "library choice: CIFAR Linf eps, L2 eps x2 for 4x the pixels (not in the paper)")
    return Budget(suite, budget, key, 0.1, 0.45, None, None,
                  "library choice for digits: eps 0.1 (Linf), 0.45 (L2) (not in the paper)")


def _check_int(value: object, arg: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{arg}: expected an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{arg}: expected an int >= {minimum}, got {value}")
    return value


def build_suite(
    suite: str = "ibrar",
    *,
    budget: str | None = None,
    dataset: str = "cifar10",
    num_classes: int | None = None,
    pgd_steps: int | None = None,
    cw_steps: int | None = None,
    attacks: Sequence[str] | None = None,
    eps: float | None = None,
    l2_eps: float | None = None,
) -> list[AttackSpec]:
    """The attacks of a suite under a budget, as :class:`AttackSpec` objects.

    IB-RAR suite (torchattacks calls of the authors' ``test.py``, spec §2.6; ``eps``/α from
    :func:`default_budget`):

    * ``pgd``: ``PGD(eps, alpha, steps=pgd_steps (10), random_start=True)``; α = 2.3·eps/steps
      (``ibrar-code``) or 2/255 (``paper``);
    * ``cw``: ``CW(c=0.1, kappa=0, lr=0.1, steps=cw_steps (200))``, L2, unbounded;
    * ``fgsm``: ``FGSM(eps)``;
    * ``fab``: ``FAB(norm='Linf', eps, steps=10, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9,
      n_classes=C)``;
    * ``nifgsm``: ``NIFGSM(eps, alpha=2/255, steps=10, decay=1.0)``.

    The IB-RAR ``cw`` is the paper's **fixed-c** CW-L2: one ``c``, a fixed step count, torchattacks'
    early abort and its margin bug (spec §2.7 item 11). It is neither ε-bounded nor minimum-norm;
    reports label it so and give the median L2 norm of its successful perturbations.

    Either suite also accepts ``"cw-l2"`` in ``attacks`` (see :data:`EXTRA_ATTACKS`): CW-L2 with the
    corrected margin of :mod:`ib_plugins.adaptive` (true class masked by −inf), ``c`` from a 5-step
    binary search per sample starting at 1, ``cw_steps`` Adam steps of lr 0.05 per search step: a
    minimum-norm attack whose median L2 is the informative figure (its accuracy tends to 0).

    Entropic suite (foolbox 3 defaults re-created with torchattacks):

    * ``linf-pgd``: ``PGD(eps, alpha=eps/30, steps=pgd_steps (40), random_start=True)``
      (foolbox ``LinfPGD``: rel. step 0.01/0.3, 40 steps, random start);
    * ``bim``: ``BIM(eps, alpha=0.2·eps, steps=10)`` (foolbox ``LinfBasicIterativeAttack``: rel.
      step 0.2, 10 steps, no random start);
    * ``fgsm``: ``FGSM(eps)``;
    * ``cw``: ``CW(c=1, kappa=0, lr=0.01, steps=cw_steps (100))``, L2, unbounded (torchattacks has no
      binary search over c; foolbox's runs 9 searches of up to 10,000 steps);
    * ``l2-pgd``: ``PGDL2(l2_eps, alpha=0.025·l2_eps, steps=pgd_steps (50), random_start=True)``
      (foolbox ``L2PGD``: rel. step 0.025, 50 steps).

    Args:
        suite: ``"ibrar"`` or ``"entropic"``.
        budget: a name from :func:`list_budgets`; ``None`` = the suite's default.
        dataset: a dataset name; selects the budget's radii.
        num_classes: FAB's ``n_classes``; ``None`` = the dataset's number of classes.
        pgd_steps: PGD iterations; ``None`` = 10 (IB-RAR) or 40 / 50 (entropic L-inf / L2).
        cw_steps: CW iterations; ``None`` = 200 (IB-RAR) or 100 (entropic).
        attacks: subset of the suite's names to keep (in the given order), optionally with
            ``"cw-l2"``; ``None`` = the suite's own attacks.
        eps: override of the budget's L-inf radius (``[0, 1]``).
        l2_eps: override of the budget's L2 radius (entropic suite).

    Returns:
        A list of :class:`AttackSpec`.

    Raises:
        ValueError: an unknown suite, budget, dataset or attack name (the message lists the valid
            ones), or a radius/step count out of range.

    Example:
        >>> specs = build_suite("ibrar", budget="ibrar-code", dataset="cifar10")
        >>> [s.name for s in specs]
        ['pgd', 'cw', 'fgsm', 'fab', 'nifgsm']
        >>> round(specs[0].kwargs["alpha"], 4), specs[0].eps
        (0.0069, 0.03)
        >>> [s.eps for s in build_suite("entropic", dataset="mnist", attacks=["fgsm", "l2-pgd"])]
        [0.3, 4.5]
    """
    suite = _canonical(suite, arg="suite", valid=tuple(SUITES), aliases=_SUITE_ALIASES)
    b = default_budget(dataset, suite, budget)
    names = list(SUITES[suite])
    if attacks is not None:
        if isinstance(attacks, str):
            attacks = [attacks]
        names = [_canonical(a, arg="attacks", valid=(*SUITES[suite], *EXTRA_ATTACKS)) for a in attacks]
    if num_classes is None:
        num_classes = get_dataset_info(dataset).num_classes
    num_classes = _check_int(num_classes, "num_classes", minimum=2)
    linf = b.linf_eps if eps is None else _check_eps(eps, "linf")
    l2 = b.l2_eps if l2_eps is None else _check_eps(l2_eps, "l2", arg="l2_eps")
    specs: list[AttackSpec] = []
    if suite == "ibrar":
        n_pgd = 10 if pgd_steps is None else _check_int(pgd_steps, "pgd_steps", minimum=1)
        n_cw = 200 if cw_steps is None else _check_int(cw_steps, "cw_steps", minimum=1)
        if b.pgd_alpha is None:
            alpha = _CODE_PGD_FACTOR * linf / n_pgd
        elif eps is None:
            alpha = b.pgd_alpha
        else:  # keep the budget's alpha / eps ratio under an eps override
            alpha = b.pgd_alpha * linf / b.linf_eps
        nif_alpha = b.nifgsm_alpha if eps is None else b.nifgsm_alpha * linf / b.linf_eps  # type: ignore[operator]
        table = {
            "pgd": lambda: AttackSpec("pgd", "linf", linf, {"alpha": alpha, "steps": n_pgd, "random_start": True}),
            "cw": lambda: AttackSpec("cw", "l2", None, {"c": 0.1, "kappa": 0, "steps": n_cw, "lr": 0.1}),
            "fgsm": lambda: AttackSpec("fgsm", "linf", linf, {}),
            "fab": lambda: AttackSpec(
                "fab", "linf", linf,
                {"norm": "Linf", "steps": 10, "n_restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9,
                 "n_classes": num_classes},
            ),
            "nifgsm": lambda: AttackSpec("nifgsm", "linf", linf, {"alpha": nif_alpha, "steps": 10, "decay": 1.0}),
        }
    else:
        assert l2 is not None
        n_linf = _FB_LINF_PGD_STEPS if pgd_steps is None else _check_int(pgd_steps, "pgd_steps", minimum=1)
        n_l2 = _FB_L2_PGD_STEPS if pgd_steps is None else n_linf
        n_cw = _ENTROPIC_CW_STEPS if cw_steps is None else _check_int(cw_steps, "cw_steps", minimum=1)
        table = {
            "linf-pgd": lambda: AttackSpec(
                "linf-pgd", "linf", linf, {"alpha": _FB_LINF_PGD_REL * linf, "steps": n_linf, "random_start": True}
            ),
            "bim": lambda: AttackSpec("bim", "linf", linf, {"alpha": _FB_BIM_REL * linf, "steps": _FB_BIM_STEPS}),
            "fgsm": lambda: AttackSpec("fgsm", "linf", linf, {}),
            "cw": lambda: AttackSpec("cw", "l2", None, {**_ENTROPIC_CW, "steps": n_cw}),
            "l2-pgd": lambda: AttackSpec(
                "l2-pgd", "l2", l2, {"alpha": _FB_L2_PGD_REL * l2, "steps": n_l2, "random_start": True}
            ),
        }
    if "cw-l2" in names:
        from ib_plugins.adaptive import adaptive_spec

        table["cw-l2"] = lambda: adaptive_spec("cw-l2", steps=n_cw, **_CWL2)
    for name in names:
        specs.append(table[name]())
    return specs


# --------------------------------------------------------------------------------------------------
# Safe execution
# --------------------------------------------------------------------------------------------------


#: The attack engines: ``"builtin"`` (:mod:`ib_plugins.attack_engine`) and ``"torchattacks"``.
ENGINES = ("builtin", "torchattacks")


def _check_engine(engine: object) -> str:
    return _canonical(engine, arg="engine", valid=ENGINES)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_xy(
    x: object, y: object, *, reason: str = "torchattacks would silently clamp them"
) -> tuple[Tensor, Tensor]:
    """Validate an attack's inputs (shared with the AutoAttack adapter): x in [0, 1], y class indices."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if not isinstance(y, Tensor):
        raise TypeError(f"y: expected a torch.Tensor, got {type(y).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x: expected a floating-point tensor in [0, 1], got dtype {x.dtype}")
    if x.device.type == "meta":
        raise ValueError(
            "x: expected a tensor with values (on the CPU or an accelerator), got a tensor on the meta device"
        )
    if y.device != x.device:
        raise ValueError(f"y: expected a tensor on x's device ({x.device}), got {y.device}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x: expected a non-empty batch [N, ...], got shape {list(x.shape)}")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y: expected class indices of shape [{x.shape[0]}], got shape {list(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"y: expected an integer tensor of class indices, got dtype {y.dtype}")
    if bool(torch.isnan(x).any()):
        raise ValueError("x: expected values in [0, 1], got NaN")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(
            f"x: expected values in [0, 1] ({reason}), got min {lo:.4g}, max {hi:.4g}; inputs are not clamped "
            "silently: put any normalisation inside the model (ib_plugins.models.Normalize)"
        )
    if int(y.min()) < 0:
        raise ValueError(f"y: expected class indices >= 0, got {int(y.min())}")
    return x, y.long()


def _check_model_dtype(model: nn.Module, x: Tensor) -> None:
    """The attacks feed ``x`` (and perturbations of its dtype) to the model: the dtypes must agree."""
    for t in model.parameters():
        if t.is_floating_point():
            if t.dtype != x.dtype:
                raise TypeError(
                    f"x: expected dtype {t.dtype} (the dtype of the model's parameters), got {x.dtype}; "
                    f"convert one of them (x.to({t.dtype}) or model.to({x.dtype}))"
                )
            return


def _module_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _resolve_device(model: nn.Module, x: Tensor, device: torch.device | str | None) -> torch.device:
    model_dev = _module_device(model)
    if device is None:
        return model_dev if model_dev is not None else x.device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected a torch device, got {device!r}") from err
    if model_dev is None:
        return dev
    if model_dev.type == dev.type and (dev.index is None or dev.index == model_dev.index):
        return model_dev
    raise ValueError(
        f"device: the model's parameters are on {model_dev}, got device={dev}; move the model first "
        "(the attack is built on one device)"
    )


def _cuda_devices(dev: torch.device) -> list[int]:
    if dev.type == "cuda" or (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return list(range(torch.cuda.device_count()))
    return []


@contextlib.contextmanager
def _attack_context(model: nn.Module, dev: torch.device, seed: int) -> Iterator[None]:
    """Eval mode, IBModel recording paused, RNGs forked and seeded; modes restored afterwards."""
    cuda = _cuda_devices(dev)
    with _inference_modes(model), torch.random.fork_rng(devices=cuda):
        _seed_forked(seed, cuda)
        yield


def _seed_forked(seed: int, cuda: Sequence[int]) -> None:
    # Seed only the forked generators (torch.manual_seed would also seed unforked CUDA ones).
    torch.default_generator.manual_seed(seed)
    for index in cuda:
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)


def batch_seed(seed: int, index: int) -> int:
    """The seed of batch ``index`` of an attack run with ``seed``.

    Every batch of an attack starts from its own seed, so an example's adversarial example does not
    depend on which batches ran before it: a run sharded over several processes (each attacking
    every k-th batch) gives exactly the per-example results of a single-process run.

    Args:
        seed: the attack's seed (>= 0).
        index: the batch's index (>= 0).

    Returns:
        A seed in ``[0, 2**63)``.

    Example:
        >>> batch_seed(0, 0), batch_seed(0, 1) != batch_seed(1, 0)
        (0, True)
    """
    return (seed * 0x9E3779B97F4A7C15 + index * 0xBF58476D1CE4E5B9) % (1 << 63)


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` of each batch of ``n`` examples; a last batch of 1 joins the one before.

    HSIC-based attacks need at least 2 samples per batch; every evaluator uses this one plan, so
    batches (and their seeds, :func:`batch_seed`) are the same whatever the attack.

    Args:
        n: number of examples (>= 1).
        batch_size: examples per batch (>= 1).

    Returns:
        The batch bounds, covering ``range(n)`` in order.

    Example:
        >>> batch_bounds(5, 2)
        [(0, 2), (2, 5)]
    """
    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < 2:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def _forward(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise TypeError(
            f"model: expected the forward to return logits [N, num_classes], got "
            f"{type(out).__name__ if not isinstance(out, Tensor) else list(out.shape)}"
        )
    return out


def _looks_like_log_probs(out: Tensor) -> bool:
    out = out.detach().float()
    if not bool((out <= 1e-6).all()):
        return False
    return bool((torch.logsumexp(out, dim=1).abs() < 1e-3).all())


_CW_WARNING = (
    "the model's outputs look like log-probabilities (all <= 0, logsumexp = 0): torchattacks' CW "
    "margin max((1 - onehot) * outputs) then picks the 0 at the true-class slot, so its loss "
    "clamp(real - other, min=-kappa) is identically 0 and CW only takes noise steps (spec §2.7 item "
    "11; IB-RAR Table II's ResNet-18 CW column). Return logits from the model to get a real CW attack"
)


def _progress_over(items: Sequence[int], *, desc: str, progress: bool) -> Any:
    """``items`` with a progress display named ``desc`` (tqdm on a terminal, plain lines elsewhere)."""
    if progress:
        from ib_plugins._progress import progress_iter

        return progress_iter(items, desc=desc, unit="batch")
    return items


def _predict(model: nn.Module, x: Tensor, dev: torch.device, batch_size: int) -> Tensor:
    """No-grad argmax predictions; call inside ``_inference_modes(model)`` (eval mode, modes restored)."""
    return _predict_with_first(model, x, dev, batch_size)[0]


def _predict_with_first(model: nn.Module, x: Tensor, dev: torch.device, batch_size: int) -> tuple[Tensor, Tensor]:
    """Like :func:`_predict`, also returning the first batch's outputs (for the shape/CW checks).

    Reusing the clean pass for those checks saves a probe forward per attack.
    """
    preds = []
    first: Tensor | None = None
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            out = _forward(model, x[i : i + batch_size].to(dev))
            if first is None:
                first = out
            preds.append(out.argmax(1).to(x.device))
    assert first is not None  # _check_xy guarantees a non-empty x
    return torch.cat(preds), first


def _check_labels_fit(y: Tensor, n_out: int) -> None:
    y_max = int(y.max())
    if y_max >= n_out:
        raise ValueError(f"y: expected class indices < {n_out} (the model's outputs), got {y_max}")


def _build_attack(ta: Any, model: nn.Module, spec: AttackSpec, dev: torch.device, seed: int) -> Any:
    cls = getattr(ta, spec.attack_class, None)
    if cls is None or not isinstance(cls, type):
        raise ValueError(f"attack: expected a torchattacks attack class name, got {spec.attack_class!r}")
    kwargs = spec.constructor_kwargs()
    if spec.attack_class == "FAB":
        kwargs.setdefault("seed", seed)
    if _module_device(model) is None:  # torchattacks prints when it cannot find a parameter
        with contextlib.redirect_stdout(io.StringIO()):
            atk = cls(model, **kwargs)
    else:
        atk = cls(model, **kwargs)
    atk.set_device(dev)
    return atk


def _run_attack(
    model: nn.Module,
    spec: AttackSpec,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    seed: int,
    dev: torch.device,
    progress: bool,
    checked: bool = False,
    engine: str = "builtin",
    owned: Sequence[int] | None = None,
) -> Tensor:
    """Attack ``x`` batch by batch (each batch seeded by :func:`batch_seed`).

    ``checked=True``: the caller already checked labels and CW outputs. ``owned``: attack only these
    batch indices of :func:`batch_bounds` (a shard); the other rows are returned unchanged.
    """
    from ib_plugins.attack_engine import is_builtin, run_builtin

    use_builtin = engine == "builtin" and is_builtin(spec.attack_class)
    if engine == "builtin" and not use_builtin:
        logger.info("the built-in engine has no %s: running torchattacks' class", spec.attack_class)
    ta = None if use_builtin else require("torchattacks", purpose=f"{_PURPOSE} (torchattacks' {spec.attack_class})",
                                          extra="torchattacks")
    with _attack_context(model, dev, seed):
        if not checked:
            # One sample is enough to read the class count and the log-prob signature.
            with torch.no_grad():
                sample = _forward(model, x[:1].to(dev))
            _check_labels_fit(y, sample.shape[1])
            if spec.attack_class == "CW" and _looks_like_log_probs(sample):
                warnings.warn(_CW_WARNING, UserWarning, stacklevel=3)
        if use_builtin:
            kwargs = spec.constructor_kwargs()
            if spec.attack_class in ("FAB", "Square"):
                kwargs.setdefault("seed", seed)

            def atk(xb: Tensor, yb: Tensor) -> Tensor:
                return run_builtin(spec.attack_class, model, xb, yb, kwargs)
        else:
            atk = _build_attack(ta, model, spec, dev, seed)
        bounds = batch_bounds(x.shape[0], batch_size)
        indices = range(len(bounds)) if owned is None else owned
        cuda = _cuda_devices(dev)
        adv_all = x.clone()
        for b in _progress_over(indices, desc=spec.name, progress=progress):
            lo, hi = bounds[b]
            _seed_forked(batch_seed(seed, b), cuda)
            adv = atk(x[lo:hi].to(dev), y[lo:hi].to(dev))
            adv_all[lo:hi] = adv.detach().to(x.device, x.dtype)
    return adv_all


def run_attack(
    model: nn.Module,
    spec: AttackSpec,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    engine: str = "builtin",
) -> Tensor:
    """Run one attack of a suite on ``(x, y)`` without side effects.

    The attack runs in eval mode, batch by batch, inside ``torch.random.fork_rng`` with the CPU
    generator (and every CUDA generator, when CUDA is in use) seeded with ``seed``; FAB gets
    ``seed=seed`` too. Afterwards the global RNG state, the train/eval flag of every submodule and
    the recording state of every :class:`~ib_plugins.wrap.IBModel` inside ``model`` are as before,
    also when the attack raises. (torchattacks' FAB calls ``torch.cuda.manual_seed``; on a machine
    whose CUDA is not yet initialised that call is queued by torch and applies at CUDA start-up.)

    Args:
        model: a classifier taking ``[0, 1]`` inputs and returning ``[N, C]`` scores.
        spec: the attack (see :func:`build_suite`).
        x: inputs in ``[0, 1]``, ``[N, ...]``.
        y: class indices ``[N]``.
        batch_size: samples per attack call.
        seed: seed of the attack's randomness (random starts, FAB restarts).
        device: where the attack runs; ``None`` = the model's device (or ``x``'s when the model
            has no parameters). The model is never moved.
        progress: show a tqdm bar over batches (when tqdm is installed and stderr is a terminal).
        engine: ``"builtin"`` (default): :mod:`ib_plugins.attack_engine`, plain torch with
            torchattacks' semantics (a class it does not have runs through torchattacks);
            ``"torchattacks"``: the upstream implementation (``pip install torchattacks``), e.g. to
            reproduce the paper's numbers with the code it used.

    Returns:
        Adversarial examples, same shape, dtype and device as ``x``.

    Raises:
        ValueError: ``x`` outside ``[0, 1]`` or NaN, labels out of range or of the wrong shape,
            ``x`` on the meta device or ``y`` on another device than ``x``, a device that differs
            from the model's, or an unknown torchattacks class.
        TypeError: arguments of the wrong type (boolean labels, ``x`` of another dtype than the
            model's parameters), or a model that does not return ``[N, C]``.
        MissingOptionalDependencyError: torchattacks is not installed.

    Warns:
        UserWarning: a CW spec on a model whose outputs look like log-probabilities.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> state = torch.get_rng_state()
        >>> adv = run_attack(model, AttackSpec("fgsm", "linf", 0.1, {}), x, y, progress=False)
        >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), torch.equal(state, torch.get_rng_state())
        (True, True)
    """
    model = _check_model(model)
    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec: expected an AttackSpec, got {type(spec).__name__}")
    x, y = _check_xy(x, y)
    _check_model_dtype(model, x)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    engine = _check_engine(engine)
    dev = _resolve_device(model, x, device)
    return _run_attack(model, spec, x, y, batch_size=batch_size, seed=seed, dev=dev, progress=progress, engine=engine)


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


def evaluate_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Sequence[AttackSpec],
    *,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    keep_adversarial: bool = False,
    engine: str = "builtin",
    shard: bool | None = None,
) -> SuiteResult:
    """Clean accuracy and, per attack, accuracy and success rate on ``(x, y)``.

    Each attack runs through :func:`run_attack` (same ``seed`` for every attack; each batch of
    :func:`batch_bounds` seeded by :func:`batch_seed`). Predictions are eval-mode argmaxes. The CW
    log-probability warning is issued at most once per call.

    **Across processes.** Inside an initialised ``torch.distributed`` process group with several
    ranks (``torchrun --nproc_per_node=N ...``), every rank passes the same ``(x, y)``; rank ``r``
    attacks batches ``r, r + N, r + 2N, ...`` and the per-example results are summed over ranks, so
    every rank returns exactly the result of a single-process run (same adversarial examples, same
    counts), in about 1/N of the time.

    Args:
        model: a classifier taking ``[0, 1]`` inputs and returning ``[N, C]`` scores.
        x: inputs in ``[0, 1]``, ``[N, ...]``.
        y: class indices ``[N]``.
        specs: the attacks (see :func:`build_suite`); names must be unique.
        batch_size: samples per forward / attack call.
        seed: seed of every attack's randomness.
        device: where to run; ``None`` = the model's device.
        progress: show tqdm bars over batches.
        keep_adversarial: keep each attack's adversarial examples in
            :attr:`SuiteResult.adversarial` (on ``x``'s device).
        engine: ``"builtin"`` (default) or ``"torchattacks"`` (see :func:`run_attack`); recorded in
            the result.
        shard: split the batches over the ranks of the process group; None = when one with
            several ranks is initialised.

    Returns:
        A :class:`SuiteResult`.

    Raises:
        ValueError: bad inputs (see :func:`run_attack`) or duplicate attack names.
        TypeError: arguments of the wrong type (boolean labels, ``x`` of another dtype than the
            model's parameters).

    Warns:
        UserWarning: CW on a model whose outputs look like log-probabilities.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> res = evaluate_suite(model, x, y, [AttackSpec("fgsm", "linf", 0.0, {})], progress=False)
        >>> res["fgsm"].accuracy == res.clean_accuracy, res["fgsm"].n_flipped
        (True, 0)
    """
    model = _check_model(model)
    x, y = _check_xy(x, y)
    _check_model_dtype(model, x)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    specs = list(specs)
    for s in specs:
        if not isinstance(s, AttackSpec):
            raise TypeError(f"specs: expected AttackSpec items, got {type(s).__name__}")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"specs: expected unique attack names, got duplicates {dupes}")
    engine = _check_engine(engine)
    dev = _resolve_device(model, x, device)
    from ib_plugins.distributed import all_reduce_sum, world_info

    rank, world = world_info()
    sharded = world > 1 if shard is None else bool(shard) and world > 1
    bounds = batch_bounds(int(x.shape[0]), batch_size)
    owned = [b for b in range(len(bounds)) if b % world == rank] if sharded else list(range(len(bounds)))
    mine = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for b in owned:
        mine[bounds[b][0] : bounds[b][1]] = True

    def combine(rows: Tensor) -> Tensor:
        """Rows computed on this rank's batches (zeros elsewhere), summed over the ranks."""
        if not sharded:
            return rows
        local = torch.where(mine.view(-1, *([1] * (rows.dim() - 1))), rows, torch.zeros_like(rows))
        dtype = rows.dtype
        summed = all_reduce_sum(local.to(torch.float64 if dtype.is_floating_point else torch.int64))
        return summed.to(dtype) if dtype != torch.bool else summed > 0

    with _inference_modes(model):
        clean_pred, first_out = _predict_rows(model, x, dev, bounds, owned)
    _check_labels_fit(y, first_out.shape[1])
    if any(s.attack_class == "CW" for s in specs) and _looks_like_log_probs(first_out):
        warnings.warn(_CW_WARNING, UserWarning, stacklevel=2)
    clean_ok = combine(clean_pred == y)
    results: list[AttackResult] = []
    kept: dict[str, Tensor] = {}
    correct: dict[str, Tensor] = {"clean": clean_ok}
    for spec in specs:
        start = time.perf_counter()
        if spec.attack_class.startswith("adaptive:"):  # e.g. "cw-l2" from build_suite(attacks=[...])
            from ib_plugins.adaptive import run_adaptive_attack

            adv = x.clone()
            for b in _progress_over(owned, desc=spec.name, progress=progress):
                lo, hi = bounds[b]
                adv[lo:hi] = run_adaptive_attack(
                    model, spec.attack_class, x[lo:hi], y[lo:hi], eps=spec.eps, seed=batch_seed(seed, b),
                    batch_size=hi - lo, device=dev, progress=False, **dict(spec.kwargs),
                )
        else:
            adv = _run_attack(
                model, spec, x, y, batch_size=batch_size, seed=seed, dev=dev, progress=progress, checked=True,
                engine=engine, owned=owned,
            )
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds = time.perf_counter() - start
        with _inference_modes(model):
            adv_pred, _ = _predict_rows(model, adv, dev, bounds, owned)
        linf, l2 = _perturbation_norms(adv, x)
        adv_ok = combine(adv_pred == y)
        results.append(_result_from_rows(spec, clean_ok, adv_ok, combine(linf), combine(l2), seconds))
        correct[spec.name] = adv_ok
        if keep_adversarial:
            kept[spec.name] = combine(adv) if sharded else adv
        logger.info("%s: accuracy %.2f%%, success rate %s%%", spec.name, 100 * results[-1].accuracy,
                    _pct(results[-1].success_rate))
    return SuiteResult(
        n=int(y.shape[0]), n_clean_correct=int(clean_ok.sum()), attacks=results, seed=seed,
        adversarial=MappingProxyType(kept), correct=MappingProxyType(correct), engine=engine,
    )


def _predict_rows(
    model: nn.Module, x: Tensor, dev: torch.device, bounds: Sequence[tuple[int, int]], owned: Sequence[int]
) -> tuple[Tensor, Tensor]:
    """Argmax predictions of the ``owned`` batches (-1 elsewhere) and the first owned batch's outputs."""
    preds = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
    first: Tensor | None = None
    with torch.no_grad():
        for b in owned:
            lo, hi = bounds[b]
            out = _forward(model, x[lo:hi].to(dev))
            if first is None:
                first = out
            preds[lo:hi] = out.argmax(1).to(x.device)
    if first is None:  # a rank without a batch (more ranks than batches): probe one example for the checks
        with torch.no_grad():
            first = _forward(model, x[:1].to(dev))
    return preds, first


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


# --------------------------------------------------------------------------------------------------
# Noise, steps, misclassification tendencies, plots
# --------------------------------------------------------------------------------------------------


def random_noise(x: Tensor, *, norm: str, eps: float, generator: torch.Generator) -> Tensor:
    """Add uniform random noise of a given norm and radius, clipped to ``[0, 1]``.

    ``"linf"``: every element uniform in ``[-eps, eps]``. ``"l2"``: a direction uniform on the
    sphere (normalised Gaussian) scaled to L2 norm ``eps``. Clipping to ``[0, 1]`` only shrinks
    the perturbation, so its norm stays ``<= eps``. The noise is drawn on the generator's device
    (then moved to ``x``'s), so results do not depend on ``x``'s device.

    Args:
        x: inputs ``[N, ...]`` in ``[0, 1]``.
        norm: ``"linf"`` or ``"l2"``.
        eps: the radius.
        generator: source of randomness (never the global RNG).

    Returns:
        The noisy inputs, same shape, dtype and device as ``x``.

    Raises:
        ValueError: bad ``norm`` or ``eps``.
        TypeError: ``generator`` is not a ``torch.Generator``.

    Example:
        >>> x = torch.full((3, 1, 4, 4), 0.5)
        >>> noisy = random_noise(x, norm="l2", eps=0.2, generator=torch.Generator().manual_seed(0))
        >>> torch.allclose((noisy - x).flatten(1).norm(dim=1), torch.full((3,), 0.2))
        True
    """
    norm = _canonical(norm, arg="norm", valid=_NORMS, aliases={"inf": "linf", "l-inf": "linf"})
    eps = _check_eps(eps, norm)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    shape, gdev = x.shape, generator.device
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator, device=gdev, dtype=torch.float32) * 2 - 1) * eps
    else:
        delta = torch.randn(shape, generator=generator, device=gdev, dtype=torch.float32)
        flat = delta.flatten(1)
        delta = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12) * eps).view(shape)
    return (x + delta.to(device=x.device, dtype=x.dtype)).clamp(0, 1)


def noise_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    norm: str,
    eps: float,
    seed: int = 0,
    batch_size: int = 100,
    device: torch.device | str | None = None,
) -> float:
    """Accuracy under uniform random noise of a given norm and radius (entropic Tables V–VI).

    Uses :func:`random_noise` with a local ``torch.Generator().manual_seed(seed)``; the global RNG
    and the model's modes are untouched.

    Args:
        model: a classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        norm: ``"linf"`` or ``"l2"``.
        eps: the noise radius (e.g. the suite's budget).
        seed: seed of the noise.
        batch_size: samples per forward.
        device: where the model runs; ``None`` = its device.

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        ValueError: bad inputs, ``norm`` or ``eps``.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> 0.0 <= noise_accuracy(model, x, y, norm="linf", eps=0.1) <= 1.0
        True
    """
    model = _check_model(model)
    x, y = _check_xy(x, y)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    seed = _check_int(seed, "seed")
    dev = _resolve_device(model, x, device)
    noisy = random_noise(x, norm=norm, eps=eps, generator=torch.Generator().manual_seed(seed))
    with _inference_modes(model):
        pred = _predict(model, noisy, dev, batch_size)
    return float((pred == y).float().mean())


_STEP_ATTACKS = {"ibrar": ("pgd", "cw", "fab", "nifgsm"), "entropic": ("linf-pgd", "bim", "cw", "l2-pgd")}


def accuracy_vs_steps(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: str = "pgd",
    steps: Sequence[int] = (1, 10, 20, 30, 40, 50),
    suite: str = "ibrar",
    budget: str | None = None,
    dataset: str = "cifar10",
    num_classes: int | None = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
    engine: str = "builtin",
) -> tuple[list[int], list[float]]:
    """Robust accuracy as a function of the number of attack steps (IB-RAR Fig. 3).

    Each point is one :func:`build_suite` attack with its step count replaced. Under the
    ``"ibrar-code"`` budget the PGD step size is ``2.3·eps/n``, so it shrinks as ``n`` grows, as
    in the authors' sweep (``test.py`` L354-371); NI-FGSM and FAB keep their step sizes.

    Args:
        model: a classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        attack: an iterative attack of the suite (IB-RAR: pgd, cw, fab, nifgsm; entropic:
            linf-pgd, bim, cw, l2-pgd).
        steps: the step counts.
        suite: ``"ibrar"`` or ``"entropic"``.
        budget: the suite's budget (``None`` = default).
        dataset: selects the radii.
        num_classes: FAB's ``n_classes`` (``None`` = the dataset's).
        batch_size: samples per attack call.
        seed: seed of the attacks.
        device: where to run.
        progress: show tqdm bars.
        engine: ``"builtin"`` or ``"torchattacks"`` (see :func:`run_attack`).

    Returns:
        ``(steps, accuracies)``: the step counts and accuracies in ``[0, 1]``.

    Raises:
        ValueError: an attack without steps (e.g. fgsm) or not in the suite, or a bad step count.

    Example:
        >>> import torch, torch.nn as nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.arange(4) % 3
        >>> s, acc = accuracy_vs_steps(model, x, y, steps=(1, 2), dataset="digits", num_classes=3, progress=False)
        >>> s, len(acc)
        ([1, 2], 2)
    """
    suite = _canonical(suite, arg="suite", valid=tuple(SUITES), aliases=_SUITE_ALIASES)
    attack = _canonical(attack, arg="attack", valid=_STEP_ATTACKS[suite])
    if isinstance(steps, int) or not isinstance(steps, Sequence) or not steps:
        raise TypeError(f"steps: expected a non-empty sequence of ints, got {steps!r}")
    step_list = [_check_int(n, "steps", minimum=1) for n in steps]
    accs: list[float] = []
    for n in step_list:
        if attack in ("pgd", "linf-pgd", "l2-pgd"):
            spec = build_suite(suite, budget=budget, dataset=dataset, num_classes=num_classes, pgd_steps=n,
                               attacks=[attack])[0]
        elif attack == "cw":
            spec = build_suite(suite, budget=budget, dataset=dataset, num_classes=num_classes, cw_steps=n,
                               attacks=[attack])[0]
        else:
            spec = build_suite(suite, budget=budget, dataset=dataset, num_classes=num_classes, attacks=[attack])[0]
            spec = replace(spec, kwargs={**spec.kwargs, "steps": n})
        res = evaluate_suite(model, x, y, [spec], batch_size=batch_size, seed=seed, device=device, progress=progress,
                             engine=engine)
        accs.append(res.attacks[0].accuracy)
    return step_list, accs


def misclassification_tendency(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_adv: Tensor,
    *,
    num_classes: int | None = None,
    normalize: bool = False,
    batch_size: int = 100,
    device: torch.device | str | None = None,
) -> Tensor:
    """Which class each successfully attacked sample was pushed to (IB-RAR Table IV).

    Among the samples the model classifies correctly on ``x`` and wrongly on ``x_adv``, entry
    ``[i, j]`` counts those of true class ``i`` predicted as ``j`` after the attack (the diagonal is
    0).

    Args:
        model: a classifier.
        x: clean inputs in ``[0, 1]``.
        y: class indices.
        x_adv: adversarial inputs, same shape as ``x``.
        num_classes: matrix size; ``None`` = the model's number of outputs.
        normalize: return row-normalised rates (rows without successes stay 0) instead of counts.
        batch_size: samples per forward.
        device: where the model runs.

    Returns:
        ``[C, C]`` int64 counts, or float32 rates with ``normalize``, on CPU.

    Raises:
        ValueError: shapes differ or inputs are outside ``[0, 1]``.

    Example:
        >>> import torch, torch.nn as nn
        >>> class Pick(nn.Module):  # predicts the class stored in the first pixel
        ...     def forward(self, x):
        ...         return nn.functional.one_hot(x.flatten(1)[:, 0].mul(2).round().long(), 3).float()
        >>> x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1)
        >>> x_adv = torch.tensor([0.5, 0.5, 0.0]).view(3, 1, 1, 1)
        >>> misclassification_tendency(Pick(), x, torch.tensor([0, 1, 2]), x_adv).tolist()
        [[0, 1, 0], [0, 0, 0], [1, 0, 0]]
    """
    model = _check_model(model)
    x, y = _check_xy(x, y)
    if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
        raise ValueError(
            f"x_adv: expected a tensor of shape {list(x.shape)}, got "
            f"{list(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__}"
        )
    _check_xy(x_adv, y)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    dev = _resolve_device(model, x, device)
    with _inference_modes(model):
        with torch.no_grad():
            n_out = _forward(model, x[:1].to(dev)).shape[1]
        clean = _predict(model, x, dev, batch_size).cpu()
        adv = _predict(model, x_adv, dev, batch_size).cpu()
    c = n_out if num_classes is None else _check_int(num_classes, "num_classes", minimum=2)
    yc = y.cpu()
    if int(yc.max()) >= c or int(adv.max()) >= c:
        raise ValueError(f"num_classes: expected more than the largest class index, got {c}")
    flipped = (clean == yc) & (adv != yc)
    counts = torch.bincount(yc[flipped] * c + adv[flipped], minlength=c * c).view(c, c)
    if not normalize:
        return counts
    rates = counts.float()
    totals = rates.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, rates / totals.clamp_min(1), torch.zeros_like(rates))


def tendency_markdown(matrix: Tensor, *, class_names: Sequence[str] | None = None) -> str:
    """Render a :func:`misclassification_tendency` matrix as markdown.

    Rows are true classes, columns adversarial predictions; a last column names the most frequent
    adversarial class of each row (``-`` when the row is empty). Rates are shown as percentages.

    Args:
        matrix: ``[C, C]`` counts (integer) or rates (float).
        class_names: ``C`` labels; default ``0 .. C-1``.

    Returns:
        The table (no trailing newline).

    Raises:
        ValueError: ``matrix`` is not square or ``class_names`` has the wrong length.

    Example:
        >>> print(tendency_markdown(torch.tensor([[0, 2], [1, 0]]), class_names=["cat", "dog"]))
        | true \\ adv | cat | dog | most frequent |
        |---|---|---|---|
        | cat | 0 | 2 | dog |
        | dog | 1 | 0 | cat |
    """
    if not isinstance(matrix, Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix: expected a square [C, C] tensor, got {getattr(matrix, 'shape', type(matrix))}")
    c = matrix.shape[0]
    names = [str(i) for i in range(c)] if class_names is None else [md_cell(n) for n in class_names]
    if len(names) != c:
        raise ValueError(f"class_names: expected {c} names, got {len(names)}")
    is_float = matrix.is_floating_point()
    lines = ["| true \\ adv | " + " | ".join(names) + " | most frequent |", "|---|" + "---|" * (c + 1)]
    for i in range(c):
        row = matrix[i]
        cells = [f"{100 * float(v):.1f}" if is_float else str(int(v)) for v in row]
        top = names[int(row.argmax())] if float(row.sum()) > 0 else "-"
        lines.append(f"| {names[i]} | " + " | ".join(cells) + f" | {top} |")
    return "\n".join(lines)


def plot_accuracy_vs_steps(
    curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    path: PathLike,
    *,
    title: str | None = None,
    ylabel: str = "Robust accuracy (%)",
) -> Path:
    """Plot accuracy-vs-steps curves (as returned by :func:`accuracy_vs_steps`) to a PNG.

    Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly, never ``pyplot``, so no
    global backend state changes. Accuracies are given in ``[0, 1]`` and drawn in percent.

    Args:
        curves: ``label -> (steps, accuracies)``.
        path: the output file (parent folders are created).
        title: optional plot title.
        ylabel: the y-axis label.

    Returns:
        The written path.

    Raises:
        ValueError: empty ``curves`` or mismatched lengths.
        MissingOptionalDependencyError: matplotlib is not installed.

    Example:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = plot_accuracy_vs_steps({"CE": ([1, 10], [0.5, 0.1])}, pathlib.Path(d) / "f.png")
        ...     p.stat().st_size > 0
        True
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(f"curves: expected a non-empty mapping label -> (steps, accuracies), got {curves!r}")
    for label, curve in curves.items():
        if not isinstance(curve, (tuple, list)) or len(curve) != 2 or len(curve[0]) != len(curve[1]):
            raise ValueError(f"curves[{label!r}]: expected (steps, accuracies) of equal length, got {curve!r}")
    require("matplotlib", purpose=f"{_PURPOSE}.plot_accuracy_vs_steps")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, (s, acc) in curves.items():
        ax.plot(list(s), [100 * float(a) for a in acc], marker="o", label=str(label))
    ax.set_xlabel("Attack steps")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    return out
