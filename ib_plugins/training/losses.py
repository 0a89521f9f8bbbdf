"""Training losses: TRADES, MART and the per-method :func:`batch_loss` (task loss + IB term).

The Trainer and the ART adapter (:mod:`ib_plugins.adapters.art_training`) both take their losses from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._context import _null_context
from ib_plugins.training.attacks import kl_pgd
from ib_plugins.training.config import TrainConfig, _choice
from ib_plugins.wrap import IBModel


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def trades_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float, variant: str) -> Tensor:
    """TRADES: ``CE(adv) + β·KL(p_clean || p_adv)`` (``"ibrar"``) or ``CE(clean) + β·KL`` (``"standard"``).

    The KL is ``KLDivLoss(reduction="batchmean")(log_softmax(adv), softmax(clean))``.

    Args:
        logits_clean: logits of the clean forward.
        logits_adv: logits of the adversarial forward.
        y: labels.
        beta: weight of the KL term (0.5 authors, 6 standard).
        variant: ``"ibrar"`` or ``"standard"``.

    Returns:
        The scalar loss.

    Example:
        >>> z = torch.zeros(2, 3)
        >>> float(trades_loss(z, z, torch.tensor([0, 1]), beta=6.0, variant="standard")) == float(torch.log(torch.tensor(3.0)))
        True
    """
    _choice("variant", variant, ("ibrar", "standard"))
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    ce = F.cross_entropy(logits_adv if variant == "ibrar" else logits_clean, y)
    return ce + beta * kl


def mart_regularizer(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float) -> Tensor:
    """MART's terms beyond ``CE(adv)``: the boosted margin term and ``β·`` the weighted KL.

    ``NLL(log(1.0001 − p_adv), y₂) + β·mean_i[KL(p_clean,i || p_adv,i)·(1.0000001 − p_clean,i[y_i])]``,
    where ``y₂`` is the most likely wrong class under the adversarial output. Toolkit adapters that route
    ``CE(adv)`` through their own loss object add this to it.

    Args:
        logits_clean: logits of the clean forward.
        logits_adv: logits of the adversarial forward.
        y: labels.
        beta: weight of the robust term.

    Returns:
        The scalar.

    Example:
        >>> float(mart_regularizer(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), beta=6.0)) > 0
        True
    """
    batch = logits_clean.shape[0]
    p_adv = F.softmax(logits_adv, dim=1)
    top2 = torch.argsort(p_adv, dim=1)[:, -2:]
    y_wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boost = F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), y_wrong)
    p_clean = F.softmax(logits_clean, dim=1)
    p_true = p_clean.gather(1, y.unsqueeze(1)).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(dim=1)
    return boost + beta * (kl * (1.0000001 - p_true)).sum() / batch


def mart_loss(logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, beta: float) -> Tensor:
    """MART (Wang et al. 2020), as the official code and the authors' ``train_MART.py``.

    ``CE(adv) + NLL(log(1.0001 − p_adv), y₂) + β·mean_i[KL(p_clean,i || p_adv,i)·(1.0000001 − p_clean,i[y_i])]``,
    where ``y₂`` is the most likely wrong class under the adversarial output (see :func:`mart_regularizer`).

    Args:
        logits_clean: logits of the clean forward.
        logits_adv: logits of the adversarial forward.
        y: labels.
        beta: weight of the robust term (0.5 authors, 6 standard).

    Returns:
        The scalar loss.

    Example:
        >>> float(mart_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1]), beta=6.0)) > 0
        True
    """
    return F.cross_entropy(logits_adv, y) + mart_regularizer(logits_clean, logits_adv, y, beta=beta)


@dataclass
class BatchLoss:
    """A batch's total loss and its parts (tensors, not yet synchronised to the host).

    Attributes:
        loss: the total, to backpropagate.
        logits: logits used for the accuracy (the adversarial ones under AT).
        parts: named parts (``task``, ``ib``, ``hx``, ``hy``, ``kl``...).
        layer_hsic: the information-plane coordinates of the batch, ``[2, L]``: row 0 is
            ``nHSIC(T_l, X)``, row 1 ``nHSIC(T_l, Y)`` for each IB layer ``l`` (in
            :attr:`~ib_plugins.IBModel.layers` order), averaged over the forwards the IB term
            regularised (two for TRADES/MART with ``ib_on="both"``); None without an IB term.

    Example:
        >>> out = BatchLoss(loss=torch.tensor(1.0), logits=torch.zeros(2, 3))
        >>> out.parts, out.layer_hsic
        ({}, None)
    """

    loss: Tensor
    logits: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)
    layer_hsic: Tensor | None = None


def _add_ib(
    parts: dict[str, Tensor], model: IBModel, x_ib: Tensor, y: Tensor, output: Tensor, layers: list[Tensor]
) -> Tensor:
    terms = model.ib_terms(x_ib, y, output=output)
    parts["ib"] = parts.get("ib", terms.loss.new_zeros(())) + terms.loss.detach()
    parts["hx"] = parts.get("hx", terms.hx.new_zeros(())) + terms.hx.detach().sum()
    parts["hy"] = parts.get("hy", terms.hy.new_zeros(())) + terms.hy.detach().sum()
    layers.append(torch.stack([terms.hx.detach(), terms.hy.detach()]).float())
    return terms.loss


def _mean_layers(layers: list[Tensor]) -> Tensor | None:
    """The mean ``[2, L]`` of the IB terms' per-layer values (None when no IB term ran)."""
    if not layers or any(t.shape != layers[0].shape for t in layers):
        return None
    return layers[0] if len(layers) == 1 else torch.stack(layers).mean(0)


def batch_loss(
    config: TrainConfig,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    attack: Callable[[Tensor, Tensor], Tensor] | None = None,
    extra: Any = None,
    forward: Callable[..., Any] | None = None,
) -> BatchLoss:
    """The loss of one batch for the configured method (spec §2.5 pseudo-code).

    Must be called with ``model`` in training mode. For IB variants ``model`` is an
    :class:`~ib_plugins.IBModel`; the labels are given to its channel mask via
    :meth:`~ib_plugins.IBModel.labels`, so masked batches follow the mask's schedule.

    Args:
        config: a resolved config (see :func:`resolve_config`).
        model: the model being trained.
        x: clean inputs.
        y: labels.
        attack: ``(x, y) -> x_adv`` for AT methods (CE-PGD); ``kl_pgd`` is used for standard TRADES.
        extra: method state: the :class:`~ib_plugins.entropic.EntropicLoss` and probe for
            ``entropic``, the HBaR bottleneck for ``hbar``.
        forward: what runs the training forwards (default ``model``; the trainer passes the
            ``DistributedDataParallel`` wrapper of ``model`` in multi-process runs).

    Returns:
        :class:`BatchLoss`.

    Example:
        >>> import torch, torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> from ib_plugins.training import TrainConfig, resolve_config
        >>> cfg = resolve_config(TrainConfig(method="ce", ib=True))
        >>> net = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)),
        ...                  ib_layers=["2"], num_classes=10).train()
        >>> out = batch_loss(cfg, net, torch.rand(8, 1, 8, 8), torch.arange(8))
        >>> sorted(out.parts)
        ['hx', 'hy', 'ib', 'task']
    """
    method = config.method
    fwd = model if forward is None else forward
    ib = isinstance(model, IBModel) and config.ib
    parts: dict[str, Tensor] = {}
    layers: list[Tensor] = []  # per-layer [hx, hy] of each IB term
    labels_ctx = model.labels(y) if isinstance(model, IBModel) else _null_context()

    if method in ("ce", "vib", "entropic") or (method == "hbar" and not config.hbar_adv):
        x_in = x
        if method == "hbar" and config.mixup_alpha > 0:
            from ib_plugins.baselines import mixup

            x_in, y_a, y_b, lam = mixup(x, y, alpha=config.mixup_alpha, generator=extra["mixup_generator"])
        with labels_ctx:
            if method == "entropic":
                logits, hs = extra["probe"].run(x_in)
            else:
                logits = fwd(x_in)
        if method == "hbar" and config.mixup_alpha > 0:
            task = lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
        elif method == "entropic":
            terms = extra["loss"].terms(logits, y, hs)
            parts["task"] = terms.ce.detach()
            parts["et"] = terms.et_mean.detach()
            parts["penalty"] = terms.penalty.detach()
            return BatchLoss(loss=terms.loss, logits=logits, parts=parts)
        else:
            task = F.cross_entropy(logits, y)
        parts["task"] = task.detach()
        loss = task
        if method == "vib":
            kl = extra["vib_head"].last_kl
            parts["kl"] = kl.detach()
            loss = loss + config.vib_beta * kl
        elif method == "hbar":
            loss = loss + _add_ib(parts, model, x_in, y, logits, layers)
        elif ib:
            loss = loss + _add_ib(parts, model, x, y, logits, layers)
        return BatchLoss(loss=loss, logits=logits, parts=parts, layer_hsic=_mean_layers(layers))

    if attack is None and not (method == "trades" and config.variant == "standard"):
        raise ValueError(f"attack: method {method!r} needs a training attack, got None")

    if method == "hbar":  # HBaR + PGD: CE on the adversarial output, HSIC on an extra clean pass
        x_adv = attack(x, y)
        logits_adv = fwd(x_adv)
        model.clear_records()  # HBaR's hidden activations come from the clean pass only
        logits_clean = fwd(x)
        task = F.cross_entropy(logits_adv, y)
        parts["task"] = task.detach()
        loss = task + _add_ib(parts, model, x, y, logits_clean, layers)
        return BatchLoss(loss=loss, logits=logits_adv, parts=parts, layer_hsic=_mean_layers(layers))

    if method == "pgd-at":
        x_adv = attack(x, y)
        x_ib = x if config.x_for_ib == "clean" else x_adv
        with labels_ctx:
            logits_adv = fwd(x_adv)
            logits_clean = fwd(x) if ib and config.ib_on in ("clean", "both") else None
        task = F.cross_entropy(logits_adv, y)
        parts["task"] = task.detach()
        loss = task
        if ib:
            if config.ib_on in ("adv", "both"):
                loss = loss + _add_ib(parts, model, x_ib, y, logits_adv, layers)
            if logits_clean is not None:
                loss = loss + _add_ib(parts, model, x_ib, y, logits_clean, layers)
        return BatchLoss(loss=loss, logits=logits_adv, parts=parts, layer_hsic=_mean_layers(layers))

    # TRADES and MART: a clean and an adversarial forward.
    if method == "trades" and config.variant == "standard":
        x_adv = kl_pgd(model, x, eps=config.eps, alpha=config.pgd_alpha, steps=config.pgd_steps)
    else:
        x_adv = attack(x, y)
    x_ib = x if config.x_for_ib == "clean" else x_adv
    with labels_ctx:
        logits_clean = fwd(x)
        logits_adv = fwd(x_adv)
    if method == "trades":
        task = trades_loss(logits_clean, logits_adv, y, beta=config.trades_beta, variant=config.variant)
    else:
        task = mart_loss(logits_clean, logits_adv, y, beta=config.mart_beta)
    parts["task"] = task.detach()
    loss = task
    if ib:
        if config.ib_on in ("clean", "both"):
            loss = loss + _add_ib(parts, model, x_ib, y, logits_clean, layers)
        if config.ib_on in ("adv", "both"):
            loss = loss + _add_ib(parts, model, x_ib, y, logits_adv, layers)
        model.clear_records()
    return BatchLoss(loss=loss, logits=logits_adv, parts=parts, layer_hsic=_mean_layers(layers))
