"""The built-in attack engine: the papers' attack suites in plain torch, torchattacks-compatible.

:mod:`ib_plugins.evaluation` describes each attack of the IB-RAR and entropic suites by a
torchattacks class name and its constructor arguments (an
:class:`~ib_plugins.evaluation.AttackSpec`). This module runs those descriptions without
torchattacks, with the same semantics as torchattacks 3.5.1, so the suites need no third-party
attack package (torchattacks pins an old ``requests`` and has had no release since 2023) while a
user can still ask for the upstream implementation (``engine="torchattacks"``):

* ``FGSM(eps)``, ``PGD(eps, alpha, steps, random_start)``, ``BIM(eps, alpha, steps)``,
  ``NIFGSM(eps, alpha, steps, decay)``, ``PGDL2(eps, alpha, steps, random_start, eps_for_division)``:
  the same steps, projections and clipping to ``[0, 1]``; random starts draw from the global torch
  generator exactly as torchattacks does (``uniform_`` / ``normal_`` on a tensor like the batch), so
  under the same seed both engines give the same adversarial examples;
* ``CW(c, kappa, steps, lr)``: the **fixed-c** CW-L2 of torchattacks (Adam in tanh space, one
  constant ``c``, the margin with the true-class slot multiplied by 0, and its early abort: every
  ``max(steps // 10, 1)`` steps the run stops when the total cost rose), without writing into the
  model's parameter gradients (torchattacks calls ``cost.backward()``);
* ``FAB(norm, eps, steps, n_restarts, alpha_max, eta, beta, seed, n_classes)`` and
  ``Square(eps, n_queries, n_restarts, p_init, loss, seed)``: pyautoattack's implementations
  (which torchattacks' are copies of; pyautoattack declares no dependencies);
* ``adaptive:*`` specs are :mod:`ib_plugins.adaptive`'s attacks.

Every attack is untargeted, runs on the batch it is given, and returns adversarial examples of the
same shape, dtype and device. The caller (:func:`ib_plugins.evaluation.run_attack`) puts the model
in eval mode, forks and seeds the global RNG, and checks the inputs.

Example:
    >>> import torch, torch.nn as nn
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    >>> x, y = torch.rand(4, 1, 4, 4), torch.arange(4) % 3
    >>> adv = run_builtin("PGD", model, x, y, {"eps": 0.1, "alpha": 0.02, "steps": 5, "random_start": True})
    >>> bool((adv - x).abs().max() <= 0.1 + 1e-6), bool(adv.min() >= 0), bool(adv.max() <= 1)
    (True, True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins._optional import require

__all__ = ["BUILTIN_ATTACKS", "fgsm", "pgd", "bim", "nifgsm", "pgd_l2", "cw_fixed_c", "run_builtin", "is_builtin"]

_PURPOSE = "ib_plugins.attack_engine (FAB and Square come from pyautoattack)"


def _grad(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    """Gradient of the batch-mean cross-entropy at ``x_adv`` (torchattacks' ``nn.CrossEntropyLoss()``)."""
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
    return grad


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """FGSM: one signed-gradient step of size ``eps``, clipped to ``[0, 1]`` (torchattacks ``FGSM``).

    Args:
        model: the classifier (logits out).
        x: inputs in ``[0, 1]``.
        y: class indices.
        eps: the L-inf step.

    Returns:
        The adversarial examples.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> adv = fgsm(model, torch.full((2, 4), 0.5), torch.tensor([0, 1]), eps=0.1)
        >>> torch.allclose((adv - 0.5).abs(), torch.full((2, 4), 0.1))
        True
    """
    grad = _grad(model, x, y)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def pgd(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
        random_start: bool = True) -> Tensor:
    """L-inf PGD (Madry et al.) as torchattacks' ``PGD``: optional uniform start, signed steps, projection.

    Args:
        model: the classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        eps: the L-inf radius.
        alpha: the step size.
        steps: iterations.
        random_start: start at a uniformly random point of the ball (global torch generator).

    Returns:
        The adversarial examples (the last iterate, as torchattacks).

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> adv = pgd(model, torch.rand(3, 4), torch.tensor([0, 1, 0]), eps=0.05, alpha=0.02, steps=3)
        >>> adv.shape
        torch.Size([3, 4])
    """
    x = x.detach()
    adv = x.clone()
    if random_start:
        adv = (adv + torch.empty_like(adv).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        adv = adv.detach() + alpha * _grad(model, adv, y).sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def bim(  # noqa: D417 - its arguments are pgd's, documented there
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int
) -> Tensor:
    """BIM (Kurakin et al.) as torchattacks' ``BIM``: PGD without random start, same projection.

    Args:
        model, x, y, eps, alpha, steps: as for :func:`pgd`.

    Returns:
        The adversarial examples.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(3, 4)
        >>> torch.equal(bim(model, x, torch.tensor([0, 1, 0]), eps=0.05, alpha=0.02, steps=3),
        ...             pgd(model, x, torch.tensor([0, 1, 0]), eps=0.05, alpha=0.02, steps=3, random_start=False))
        True
    """
    # torchattacks' BIM clips to [x - eps, x + eps] ∩ [0, 1] with masks; the same set as PGD's projection.
    return pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)


def nifgsm(  # noqa: D417 - model, x, y, eps, alpha, steps are pgd's, documented there
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int, decay: float = 1.0
) -> Tensor:
    """NI-FGSM (Lin et al. 2020) as torchattacks' ``NIFGSM``: Nesterov look-ahead and momentum.

    The gradient is normalised by its mean absolute value over all non-batch dimensions
    (torchattacks: dims 1, 2, 3 of an image batch).

    Args:
        model, x, y, eps, alpha, steps: as for :func:`pgd` (L-inf radius ``eps``, step ``alpha``).
        decay: the momentum factor.

    Returns:
        The adversarial examples.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> adv = nifgsm(model, torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), eps=0.05, alpha=0.01, steps=3)
        >>> bool((adv.abs() <= 1).all())
        True
    """
    x = x.detach()
    momentum = torch.zeros_like(x)
    adv = x.clone()
    dims = tuple(range(1, x.dim()))
    for _ in range(steps):
        grad = _grad(model, adv + decay * alpha * momentum, y)
        grad = decay * momentum + grad / grad.abs().mean(dim=dims, keepdim=True)
        momentum = grad
        adv = adv.detach() + alpha * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1).detach()
    return adv


def pgd_l2(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, alpha: float, steps: int,
           random_start: bool = True, eps_for_division: float = 1e-10) -> Tensor:
    """L2 PGD as torchattacks' ``PGDL2``: normalised gradient steps, projection onto the L2 ball.

    Args:
        model: the classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        eps: the L2 radius.
        alpha: the step size.
        steps: iterations.
        random_start: start at a random point of the ball (global torch generator).
        eps_for_division: added to the gradient norm.

    Returns:
        The adversarial examples.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> adv = pgd_l2(model, x, torch.tensor([0, 1]), eps=0.5, alpha=0.1, steps=3)
        >>> bool(((adv - x).flatten(1).norm(dim=1) <= 0.5 + 1e-5).all())
        True
    """
    x = x.detach()
    n = x.shape[0]
    view = (-1,) + (1,) * (x.dim() - 1)
    adv = x.clone()
    if random_start:
        delta = torch.empty_like(adv).normal_()
        norms = delta.reshape(n, -1).norm(p=2, dim=1).view(view)
        r = torch.zeros_like(norms).uniform_(0, 1)
        delta = delta * (r / norms * eps)
        adv = (adv + delta).clamp(0, 1).detach()
    for _ in range(steps):
        grad = _grad(model, adv, y)
        grad_norms = grad.reshape(n, -1).norm(p=2, dim=1) + eps_for_division
        adv = adv.detach() + alpha * grad / grad_norms.view(view)
        delta = adv - x
        factor = torch.clamp(eps / delta.reshape(n, -1).norm(p=2, dim=1), max=1.0)
        adv = (x + delta * factor.view(view)).clamp(0, 1).detach()
    return adv


def cw_fixed_c(model: nn.Module, x: Tensor, y: Tensor, *, c: float = 1.0, kappa: float = 0.0, steps: int = 50,
               lr: float = 0.01) -> Tensor:
    """The fixed-c CW-L2 of torchattacks' ``CW`` (as the IB-RAR paper ran it), margin bug and early abort included.

    Minimises ``‖x' − x‖² + c·max(z_y − max_j (1 − onehot)_j·z_j, −κ)`` over ``x' = (tanh(w) + 1)/2``
    with Adam, keeping per sample the smallest-L2 misclassified iterate; every
    ``max(steps // 10, 1)`` steps it stops when the total cost rose since the last check. The
    margin multiplies the logits by ``1 − onehot``, so the true class contributes a 0 to the max
    (spec §2.7 item 11) — kept, so the numbers are the paper's; :mod:`ib_plugins.adaptive`'s
    ``cw-l2`` is the corrected attack. Gradients go to ``w`` only, never to the model's parameters.

    Args:
        model: the classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        c: the constant of the margin term.
        kappa: the confidence margin κ.
        steps: Adam steps.
        lr: Adam's learning rate.

    Returns:
        The best adversarial examples (the input where none was found).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.arange(4) % 3
        >>> cw_fixed_c(model, x, y, c=1.0, steps=5).shape
        torch.Size([4, 1, 4, 4])
    """
    x = x.detach()
    dim = x.dim()
    # torchattacks' inverse_tanh_space, term for term (torch.atanh rounds differently, and 200 Adam
    # steps with an early abort amplify any difference)
    u = torch.clamp(x * 2 - 1, min=-1, max=1)
    w = (0.5 * torch.log((1 + u) / (1 - u))).detach()
    w.requires_grad_(True)
    best = x.clone()
    best_l2 = torch.full((x.shape[0],), 1e10, device=x.device, dtype=x.dtype)
    prev_cost = 1e10
    optimizer = torch.optim.Adam([w], lr=lr)
    onehot: Tensor | None = None  # built at the first step (needs the number of classes)
    for step in range(steps):
        with torch.enable_grad():
            adv = 1 / 2 * (torch.tanh(w) + 1)
            current_l2 = F.mse_loss(adv.flatten(1), x.flatten(1), reduction="none").sum(dim=1)
            outputs = model(adv)
            if onehot is None:
                onehot = torch.eye(outputs.shape[1], device=x.device, dtype=outputs.dtype)[y]
            other = torch.max((1 - onehot) * outputs, dim=1)[0]
            real = torch.max(onehot * outputs, dim=1)[0]
            cost = current_l2.sum() + c * torch.clamp(real - other, min=-kappa).sum()
            (grad,) = torch.autograd.grad(cost, w)
        w.grad = grad
        optimizer.step()
        pred = outputs.detach().argmax(1)
        mask = ((pred != y) & (best_l2 > current_l2.detach())).to(x.dtype)
        best_l2 = mask * current_l2.detach() + (1 - mask) * best_l2
        mask = mask.view([-1] + [1] * (dim - 1))
        best = mask * adv.detach() + (1 - mask) * best
        if step % max(steps // 10, 1) == 0:
            value = float(cost.detach())
            if value > prev_cost:
                return best
            prev_cost = value
    return best


def _fab(model: nn.Module, x: Tensor, y: Tensor, kwargs: Mapping[str, Any]) -> Tensor:
    fab_pt = require("pyautoattack.fab_pt", purpose=_PURPOSE, extra="autoattack")
    attack = fab_pt.FABAttack_PT(
        model, norm=kwargs.get("norm", "Linf"), n_restarts=kwargs.get("n_restarts", 1),
        n_iter=kwargs.get("steps", 10), eps=kwargs.get("eps", 8 / 255), alpha_max=kwargs.get("alpha_max", 0.1),
        eta=kwargs.get("eta", 1.05), beta=kwargs.get("beta", 0.9), seed=kwargs.get("seed", 0),
        targeted=bool(kwargs.get("multi_targeted", False)), device=x.device,
        n_target_classes=max(int(kwargs.get("n_classes", 10)) - 1, 1),
    )
    return attack.perturb(x, y).detach()


def _square(model: nn.Module, x: Tensor, y: Tensor, kwargs: Mapping[str, Any]) -> Tensor:
    square = require("pyautoattack.square", purpose=_PURPOSE, extra="autoattack")
    attack = square.SquareAttack(
        model, norm=kwargs.get("norm", "Linf"), n_queries=kwargs.get("n_queries", 5000),
        eps=kwargs.get("eps", 8 / 255), p_init=kwargs.get("p_init", 0.8), n_restarts=kwargs.get("n_restarts", 1),
        seed=kwargs.get("seed", 0), loss=kwargs.get("loss", "margin"), resc_schedule=kwargs.get("resc_schedule", True),
        device=x.device,
    )
    return attack.perturb(x, y).detach()


def _keywords(fn: Callable[..., Tensor], names: tuple[str, ...]) -> Callable[[nn.Module, Tensor, Tensor, Mapping[str, Any]], Tensor]:
    def run(model: nn.Module, x: Tensor, y: Tensor, kwargs: Mapping[str, Any]) -> Tensor:
        unknown = sorted(set(kwargs) - set(names))
        if unknown:
            raise ValueError(f"kwargs: the built-in {fn.__name__} takes {', '.join(names)}, got also {unknown}")
        return fn(model, x, y, **kwargs)

    return run


#: torchattacks class name -> the built-in implementation (called as ``run(model, x, y, kwargs)``).
BUILTIN_ATTACKS: Mapping[str, Callable[[nn.Module, Tensor, Tensor, Mapping[str, Any]], Tensor]] = {
    "FGSM": _keywords(fgsm, ("eps",)),
    "PGD": _keywords(pgd, ("eps", "alpha", "steps", "random_start")),
    "BIM": _keywords(bim, ("eps", "alpha", "steps")),
    "NIFGSM": _keywords(nifgsm, ("eps", "alpha", "steps", "decay")),
    "PGDL2": _keywords(pgd_l2, ("eps", "alpha", "steps", "random_start", "eps_for_division")),
    "CW": _keywords(cw_fixed_c, ("c", "kappa", "steps", "lr")),
    "FAB": _fab,
    "Square": _square,
}


def is_builtin(attack_class: str) -> bool:
    """Whether the built-in engine runs this torchattacks class name.

    Args:
        attack_class: e.g. ``"PGD"``.

    Returns:
        True for the classes of :data:`BUILTIN_ATTACKS`.

    Example:
        >>> is_builtin("PGD"), is_builtin("OnePixel")
        (True, False)
    """
    return attack_class in BUILTIN_ATTACKS


def run_builtin(attack_class: str, model: nn.Module, x: Tensor, y: Tensor, kwargs: Mapping[str, Any]) -> Tensor:
    """Run one batch of a torchattacks-described attack with the built-in engine.

    Args:
        attack_class: the torchattacks class name (see :data:`BUILTIN_ATTACKS`).
        model: the classifier, already in the mode the attack should see (eval).
        x: inputs in ``[0, 1]`` on the model's device.
        y: class indices on the same device.
        kwargs: the class's constructor arguments (``eps`` included for bounded attacks).

    Returns:
        The adversarial examples.

    Raises:
        ValueError: an unknown class, or arguments the built-in version does not take.
        MissingOptionalDependencyError: FAB or Square without pyautoattack.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> run_builtin("FGSM", model, torch.rand(2, 4), torch.tensor([0, 1]), {"eps": 0.1}).shape
        torch.Size([2, 4])
    """
    runner = BUILTIN_ATTACKS.get(attack_class)
    if runner is None:
        raise ValueError(
            f"attack: the built-in engine runs {', '.join(sorted(BUILTIN_ATTACKS))}, got {attack_class!r}; "
            "use engine='torchattacks' for other torchattacks classes"
        )
    return runner(model, x, y, kwargs)
