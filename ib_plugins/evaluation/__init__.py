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

The package, one concept per module:

* :mod:`~ib_plugins.evaluation.suites`: the registry of suites and budgets, :class:`AttackSpec`,
  :class:`Budget`, :func:`default_budget` and :func:`build_suite`;
* :mod:`~ib_plugins.evaluation.runner`: :func:`run_attack` and :func:`evaluate_suite` (the safe execution);
* :mod:`~ib_plugins.evaluation.results`: :class:`AttackResult`, :class:`SuiteResult` and :func:`compare_markdown`;
* :mod:`~ib_plugins.evaluation.analysis`: noise accuracy, accuracy vs steps, misclassification tendency, plots.
"""

from __future__ import annotations

# Besides the public names, the private helpers that other ib_plugins modules import from here (noqa: F401).
from ib_plugins.evaluation.analysis import (
    accuracy_vs_steps,
    misclassification_tendency,
    noise_accuracy,
    plot_accuracy_vs_steps,
    random_noise,
    tendency_markdown,
)
from ib_plugins.evaluation.results import (  # noqa: F401
    AttackResult,
    SuiteResult,
    _accuracy_cell,
    _attack_result,
    _column_title,
    _fixed_c_note,
    _pct,
    compare_markdown,
)
from ib_plugins.evaluation.runner import (  # noqa: F401
    ENGINES,
    _check_engine,
    _forward,
    _predict,
    _progress_over,
    _run_attack,
    batch_bounds,
    batch_seed,
    evaluate_suite,
    run_attack,
)
from ib_plugins.evaluation.suites import (  # noqa: F401
    _PURPOSE,
    EXTRA_ATTACKS,
    SUITES,
    AttackSpec,
    Budget,
    build_suite,
    default_budget,
    list_attacks,
    list_budgets,
    list_suites,
)

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

