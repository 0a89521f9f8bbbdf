"""Machinery the adaptive attacks share: their objectives (CE, margin, IB, entropic), PGD and CW-L2."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.adaptive.eot import margin_loss
from ib_plugins.adaptive.targets import EntropicAttackConfig, IBAttackConfig, _plain_network
from ib_plugins.errors import LayerNotFiredError

# --------------------------------------------------------------------------------------------------
# The attacks
# --------------------------------------------------------------------------------------------------

Objective = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def _ce_objective(model: nn.Module) -> Objective:
    def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = _logits(model, x_adv)
        return F.cross_entropy(logits, y, reduction="sum"), logits

    return objective


def _margin_objective(model: nn.Module) -> Objective:
    def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        logits = _logits(model, x_adv)
        return margin_loss(logits, y).sum(), logits

    return objective


def _logits(model: nn.Module, x: Tensor) -> Tensor:
    out = model(x)
    if not isinstance(out, Tensor) or out.dim() != 2:
        raise TypeError(
            "model: expected the forward to return logits [N, num_classes], got "
            f"{type(out).__name__ if not isinstance(out, Tensor) else list(out.shape)}"
        )
    return out


@contextlib.contextmanager
def _ib_objective(model: nn.Module, cfg: IBAttackConfig, *, penalty: str = "add",
                  ce_reduction: str = "sum") -> Iterator[Objective]:
    from ib_plugins.activation_capture import capture_activations
    from ib_plugins.bottleneck import ib_objective, labels_to_targets

    net = _plain_network(model)
    with capture_activations(net, cfg.layers, when="always") as cap:

        def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            cap.reset()
            logits = _logits(model, x_adv)
            missing = [name for name in cfg.layers if name not in cap.fired()]
            if missing:
                raise LayerNotFiredError(
                    f"pgd-ib: layer(s) {missing} of {type(net).__name__} did not run in the forward; the IB "
                    "configuration does not match this model"
                )
            acts = list(cap.activations.values())
            classes = cfg.num_classes or int(logits.shape[1])
            targets = labels_to_targets(y, classes, dtype=x.dtype)
            terms = ib_objective(
                acts, x, targets, alpha=cfg.alpha, beta=cfg.beta, sigma=cfg.sigma, eps=cfg.eps,
                t_kernel=cfg.t_kernel, x_kernel=cfg.x_kernel, y_kernel=cfg.y_kernel,  # type: ignore[arg-type]
                center=cfg.center, bandwidth=cfg.bandwidth,  # type: ignore[arg-type]
            )
            sign = 1.0 if penalty == "add" else -1.0
            return F.cross_entropy(logits, y, reduction=ce_reduction) + sign * terms.loss, logits

        yield objective


@contextlib.contextmanager
def _entropic_objective(model: nn.Module, cfg: EntropicAttackConfig, *, penalty: str) -> Iterator[Objective]:
    from ib_plugins.entropic import EntropyProbe, entropy_flow

    sign = -1.0 if penalty == "subtract" else 1.0
    with EntropyProbe(_plain_network(model), cfg.layers) as probe:

        def objective(x_adv: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
            logits = _logits(model, x_adv)
            hs = probe.collect(logits)
            et = entropy_flow(hs, mode=cfg.mode)  # type: ignore[arg-type]
            pen = (et - cfg.target_value()) ** 2
            # per-sample terms: summing both keeps the training loss's CE : penalty ratio of every sample
            return F.cross_entropy(logits, y, reduction="sum") + sign * cfg.lam * pen.sum(), logits

        yield objective


def _pgd(
    model: nn.Module,
    objective: Objective,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    random_start: bool,
    restarts: int,
    eot_samples: int,
    generator: torch.Generator,
    any_iterate: bool = True,
) -> Tensor:
    """L∞ PGD with any-iterate success, restarts and gradient EOT (the model is in eval mode)."""
    x = x.detach()
    best = x.clone()
    fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)

    def probe(x_adv: Tensor, *, grad: bool) -> tuple[Tensor | None, Tensor]:
        total: Tensor | None = None
        logits_sum: Tensor | None = None
        for _ in range(eot_samples):
            if grad:
                x_in = x_adv.detach().requires_grad_(True)
                with torch.enable_grad():
                    loss, logits = objective(x_in, x, y)
                    (g,) = torch.autograd.grad(loss, x_in)
                total = g if total is None else total + g
            else:
                with torch.no_grad():
                    logits = _logits(model, x_adv)
            logits = logits.detach()
            logits_sum = logits if logits_sum is None else logits_sum + logits
        assert logits_sum is not None
        return total, logits_sum

    for r in range(restarts):
        if random_start and eps > 0:
            noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=torch.float32)
            x_adv = (x + (noise.to(device=x.device, dtype=x.dtype) * 2 - 1) * eps).clamp(0, 1)
        else:
            x_adv = x.clone()
        for _ in range(steps):
            grad, logits = probe(x_adv, grad=True)
            if any_iterate:
                newly = (logits.argmax(1) != y) & ~fooled
                best[newly] = x_adv[newly]
                fooled |= newly
            assert grad is not None
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            x_adv = torch.min(torch.max(x_adv + alpha * grad.sign(), lo), hi).detach()
        _, logits = probe(x_adv, grad=False)
        newly = (logits.argmax(1) != y) & ~fooled
        best[newly] = x_adv[newly]
        fooled |= newly
        if r == 0:
            best[~fooled] = x_adv[~fooled]
        if bool(fooled.all()):
            break
    return best


def _cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    c: float,
    kappa: float,
    steps: int,
    lr: float,
    search_steps: int,
    eot_samples: int,
) -> Tensor:
    """Carlini-Wagner L2 with the corrected margin; optional binary search over c per sample."""
    x = x.detach()
    n = x.shape[0]
    const = torch.full((n,), float(c), device=x.device, dtype=x.dtype)
    lower = torch.zeros_like(const)
    upper = torch.full_like(const, 1e10)
    best_l2 = torch.full_like(const, float("inf"))
    best = x.clone()
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))

    def logits_of(adv: Tensor) -> Tensor:
        out = _logits(model, adv)
        for _ in range(eot_samples - 1):
            out = out + _logits(model, adv)
        return out / eot_samples

    def record(adv: Tensor, logits: Tensor, success: Tensor) -> None:
        l2 = (adv - x).flatten(1).pow(2).sum(1)
        ok = (logits.argmax(1) != y) & (margin_loss(logits, y) >= kappa)
        better = ok & (l2 < best_l2)
        best_l2.copy_(torch.where(better, l2, best_l2))
        best[better] = adv[better]
        success |= ok

    for _ in range(search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _ in range(steps):
            with torch.enable_grad():
                adv = (torch.tanh(w) + 1) / 2
                logits = logits_of(adv)
                f = torch.clamp(-margin_loss(logits, y), min=-kappa)
                l2 = (adv - x).flatten(1).pow(2).sum(1)
                loss = (l2 + const * f).sum()
                (g,) = torch.autograd.grad(loss, w)
            record(adv.detach(), logits.detach(), success)
            w.grad = torch.nan_to_num(g, nan=0.0)
            opt.step()
        with torch.no_grad():
            adv = (torch.tanh(w) + 1) / 2
            record(adv, logits_of(adv), success)
        upper = torch.where(success, torch.minimum(upper, const), upper)
        lower = torch.where(success, lower, torch.maximum(lower, const))
        const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
    return best
