"""Adaptive attacks on information-bottleneck defences: PGD through the defence's own objective, EOT, a fixed CW.

The attacks of :mod:`ib_plugins.evaluation` are generic torchattacks calls. A defence that adds a
term to its training objective should also be attacked *through* that term (Carlini et al. 2019,
"On Evaluating Adversarial Robustness", §4; Tramèr et al. 2020, "On Adaptive Attacks to
Adversarial Example Defenses"). This module adds, as :class:`~ib_plugins.evaluation.AttackSpec`-
compatible attacks (see :func:`adaptive_spec`):

* ``pgd-ib``: L∞ PGD that **maximises** ``CE + α·Σ_l nHSIC(T_l, X) − β·Σ_l nHSIC(T_l, Y)``, i.e.
  the IB-RAR training loss, through the defended model's own hooks (the authors' ``pgd_mi``,
  spec §2.6). ``X`` is the clean batch and ``Y`` the true labels, as in ``pgd_mi``. The layers,
  weights and kernels come from the model's IB configuration (an :class:`~ib_plugins.IBModel`'s
  :meth:`~ib_plugins.IBModel.ib_config`, a :class:`~ib_plugins.training.TrainConfig` with
  ``ib=True``, or a checkpoint, see :func:`load_attack_target`), never hard-coded. The authors'
  ``pgd_mi`` used *all* hooked layers and a Gaussian Y kernel; pass such an ``ib_config`` to
  reproduce it exactly. The activations are captured in **eval mode with gradients** by
  :func:`ib_plugins.capture_activations` (``when="always"``) on the plain network; the objective
  is :func:`ib_plugins.ib_objective`. The HSIC terms couple the samples of a batch, so the attack is
  batch-dependent (batches of at least 2 samples; a last batch of 1 is merged into the previous).
  **CE reduction.** With the batch-*mean* CE (the training loss; ``nn.CrossEntropyLoss``'s default,
  so presumably ``pgd_mi``'s), the per-sample CE gradient is scaled by ``1/m`` while the HSIC
  terms are batch statistics: near clean points, where the softmax saturates, the HSIC gradient is
  ~60x larger on the digits IB-RAR model, the signed step follows it, and the attack ends up *weaker*
  than plain PGD (73.8 % vs 70.0 % robust accuracy on 450 test images, ε = 0.1, 10 steps). The
  default therefore *sums* the CE over the batch (``ce_reduction="sum"``: every sample keeps its own
  CE gradient, the IB term is added on top; 69.6 % on the same model); ``ce_reduction="mean"`` gives
  the ``pgd_mi`` weighting. :func:`ib_plugins.audit.run_audit` runs both.
* ``pgd-entropic``: L∞ PGD through the entropic-retraining objective. **Direction** (a choice, the
  paper has no adaptive attack): by default the attacker maximises
  ``CE − λ·mean_b (E_T,b − σ·E_T_ref)²``: it raises the loss while keeping each adversarial point's
  entropy flow at the value the retrained model shows on clean data, so adversarial points stay
  "in distribution" for the statistic the defence trained on. ``entropic_penalty="add"`` maximises
  the training loss ``CE + λ·penalty`` instead. The per-sample penalty is used (the training loss
  uses the batch mean), so samples do not interact. ``pgd-ce`` is the plain-CE counterpart.
* ``pgd-ce`` / ``pgd-margin``: the same PGD loop on cross-entropy or on the corrected margin
  ``max_{j≠y} z_j − z_y`` (:func:`margin_loss`); the margin loss does not saturate when the
  softmax does, a standard remedy against masked gradients.
* ``cw-l2``: Carlini–Wagner L2 with the **corrected margin**: the largest *other* logit is taken
  with the true class masked by ``−inf``. torchattacks' ``CW`` multiplies by ``1 − onehot``, so the
  true-class slot contributes a 0 to the max and the attack stalls as soon as all other logits are
  negative (spec §2.7 item 11; always for log-probability outputs). It also stops early on a
  non-decreasing cost; this one runs all steps and can binary-search ``c`` (``search_steps``).

Every PGD attack here is the Madry et al. L∞ PGD (random start, signed steps, projection) with
three additions: a sample counts as broken if **any** iterate is misclassified (that iterate is
returned), ``restarts`` random restarts keep the first restart that breaks a sample, and
``eot_samples > 1`` averages the gradient over that many forwards (expectation over
transformation, Athalye et al. 2018) for stochastic models. :class:`EOTModel` instead averages
logits, which makes any stochastic model usable by torchattacks and by the prediction code.

:func:`run_adaptive_attack` obeys the rules of :func:`ib_plugins.evaluation.run_attack`: the global
RNG is forked and seeded with ``seed`` (random starts use a local generator seeded with ``seed``),
every submodule's train/eval flag is restored, :class:`~ib_plugins.IBModel` recording is paused,
inputs outside ``[0, 1]`` raise ``ValueError``, and no gradient is left on the model's parameters.

Example:
    >>> import torch, torch.nn as nn
    >>> from ib_plugins import wrap_model
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3))
    >>> model = wrap_model(net, ib_layers=["2"], num_classes=3)
    >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
    >>> adv = run_adaptive_attack(model, "pgd-ib", x, y, eps=0.1, steps=3)
    >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), model.training
    (True, True)
    >>> adaptive_spec("pgd-ib", eps=0.1, steps=3).attack
    'adaptive:pgd-ib'

The package: :mod:`~ib_plugins.adaptive.specs` (the attacks by name), :mod:`~ib_plugins.adaptive.targets`
(the defence's configuration), the shared machinery :mod:`~ib_plugins.adaptive.eot` (margin loss, EOT,
determinism) and :mod:`~ib_plugins.adaptive.pgd` (objectives, PGD, CW-L2), and :mod:`~ib_plugins.adaptive.attacks`
(running them).
"""

from __future__ import annotations

from ib_plugins.adaptive.attacks import (
    _predict,  # noqa: F401
    evaluate_specs,
    run_adaptive_attack,
    run_spec,
)
from ib_plugins.adaptive.eot import EOTModel, is_deterministic, margin_loss
from ib_plugins.adaptive.specs import (
    ADAPTIVE_ATTACKS,
    MissingAttackConfigError,
    adaptive_spec,
    is_adaptive_spec,
    list_adaptive_attacks,
)
from ib_plugins.adaptive.targets import (
    AttackTarget,
    EntropicAttackConfig,
    IBAttackConfig,
    _find_ibmodel,  # noqa: F401
    load_attack_target,
    resolve_entropic_config,
    resolve_ib_config,
)

__all__ = [
    "ADAPTIVE_ATTACKS",
    "MissingAttackConfigError",
    "list_adaptive_attacks",
    "adaptive_spec",
    "is_adaptive_spec",
    "IBAttackConfig",
    "EntropicAttackConfig",
    "resolve_ib_config",
    "resolve_entropic_config",
    "AttackTarget",
    "load_attack_target",
    "margin_loss",
    "EOTModel",
    "is_deterministic",
    "run_adaptive_attack",
    "run_spec",
    "evaluate_specs",
]
