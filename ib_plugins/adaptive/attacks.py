"""Running the adaptive attacks: :func:`run_adaptive_attack`, :func:`run_spec` and :func:`evaluate_specs`."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from types import MappingProxyType
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins.adaptive.pgd import (
    _ce_objective,
    _cw_l2,
    _entropic_objective,
    _ib_objective,
    _logits,
    _margin_objective,
    _pgd,
)
from ib_plugins.adaptive.specs import _canonical_name, is_adaptive_spec
from ib_plugins.adaptive.targets import resolve_entropic_config, resolve_ib_config


def _check_float(value: object, arg: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{arg}: expected a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{arg}: expected a finite value {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def _slices(n: int, batch_size: int, *, min_size: int) -> list[slice]:
    out = [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(out) > 1 and out[-1].stop - out[-1].start < min_size:
        last = out.pop()
        out[-1] = slice(out[-1].start, last.stop)
    return out


def run_adaptive_attack(
    model: nn.Module,
    name: str,
    x: Tensor,
    y: Tensor,
    *,
    eps: float | None = None,
    steps: int = 10,
    alpha: float | None = None,
    seed: int = 0,
    ib_config: Any = None,
    entropic_config: Any = None,
    random_start: bool = True,
    restarts: int = 1,
    eot_samples: int = 1,
    entropic_penalty: str = "subtract",
    ib_penalty: str = "add",
    ce_reduction: str = "sum",
    c: float = 1.0,
    kappa: float = 0.0,
    lr: float = 0.01,
    search_steps: int = 1,
    any_iterate: bool = True,
    batch_size: int = 100,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Run one adaptive attack on ``(x, y)`` without side effects (the rules of ``evaluation.run_attack``).

    Args:
        model: a classifier taking ``[0, 1]`` inputs and returning ``[N, C]`` logits (a plain network,
            an :class:`~ib_plugins.IBModel`, or an :class:`EOTModel`).
        name: a name from :func:`list_adaptive_attacks`.
        x: inputs in ``[0, 1]``, ``[N, ...]``.
        y: class indices ``[N]``.
        eps: L∞ radius of the PGD attacks (required); None for ``cw-l2`` (unbounded).
        steps: iterations (PGD steps or CW optimiser steps per search step).
        alpha: PGD step size; None = ``2.5·eps/steps`` (Madry et al.).
        seed: seed of the random starts (local generator) and of the model's own randomness (the
            global RNG is forked and seeded).
        ib_config: IB configuration for ``pgd-ib`` (see :func:`resolve_ib_config`).
        entropic_config: configuration for ``pgd-entropic`` (see :func:`resolve_entropic_config`).
        random_start: PGD starts from a uniform point of the ε-ball.
        restarts: PGD runs; a sample is broken if any run breaks it.
        eot_samples: forwards whose gradients (PGD) or logits (CW) are averaged per step (EOT).
        entropic_penalty: ``"subtract"`` (default: maximise ``CE − λ·penalty``) or ``"add"``
            (maximise ``CE + λ·penalty``).
        ib_penalty: ``"add"`` (default: maximise ``CE + IB term``, as ``pgd_mi``) or ``"subtract"``.
        ce_reduction: CE of ``pgd-ib`` summed over the batch (``"sum"``, default) or averaged
            (``"mean"``, as in the training loss and ``nn.CrossEntropyLoss``). See the module notes.
        c: CW constant (initial constant with ``search_steps > 1``).
        kappa: CW confidence.
        lr: CW Adam learning rate.
        search_steps: CW binary-search steps over ``c`` (1 = fixed ``c``, like torchattacks).
        any_iterate: PGD returns the first misclassified iterate of a sample (True) or the final
            iterate of a run (False: maximal loss, better for transfer attacks).
        batch_size: samples per attack batch (``pgd-ib`` needs ≥ 2; a last batch of 1 is merged).
        device: where to run; None = the model's device. The model is never moved.
        progress: show a tqdm bar over batches.

    Returns:
        Adversarial examples, same shape, dtype and device as ``x``; for samples the attack did not
        break, the last PGD iterate of the first run (CW: the clean input).

    Raises:
        ValueError: inputs outside ``[0, 1]``, labels out of range, a bad radius/step count, an
            unknown attack name.
        MissingAttackConfigError: ``pgd-ib`` without an IB configuration (or ``pgd-entropic``
            without an entropic one); the message names what is missing.
        UnknownLayerError: a configured layer is not in the model.
        TypeError: arguments of the wrong type.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(6, 1, 4, 4), torch.arange(6) % 3
        >>> state = torch.get_rng_state()
        >>> adv = run_adaptive_attack(model, "cw-l2", x, y, steps=20, c=10.0, lr=0.1)
        >>> adv.shape == x.shape, torch.equal(state, torch.get_rng_state())
        (True, True)
        >>> a1 = run_adaptive_attack(model, "pgd-ce", x, y, eps=0.1, seed=3)
        >>> torch.equal(a1, run_adaptive_attack(model, "pgd-ce", x, y, eps=0.1, seed=3))
        True
    """
    from ib_plugins._context import _attack_context, _resolve_device
    from ib_plugins._validation import _check_int, _check_model, _check_xy
    from ib_plugins.evaluation import _progress_over

    model = _check_model(model)
    key = _canonical_name(name)
    x, y = _check_xy(x, y, reason="the attacks keep adversarial examples in [0, 1]")
    steps = _check_int(steps, "steps", minimum=1)
    seed = _check_int(seed, "seed")
    restarts = _check_int(restarts, "restarts", minimum=1)
    eot_samples = _check_int(eot_samples, "eot_samples", minimum=1)
    search_steps = _check_int(search_steps, "search_steps", minimum=1)
    batch_size = _check_int(batch_size, "batch_size", minimum=1)
    if key == "cw-l2":
        if eps is not None:
            raise ValueError(f"eps: cw-l2 is an unbounded L2 attack, expected eps=None, got {eps!r}")
        c = _check_float(c, "c", positive=True)
        kappa = _check_float(kappa, "kappa")
        lr = _check_float(lr, "lr", positive=True)
    else:
        if eps is None:
            raise ValueError(f"eps: {key} needs an L-inf radius in [0, 1], got None")
        eps = _check_float(eps, "eps")
        if eps > 1:
            raise ValueError(f"eps: expected an L-inf radius in [0, 1] for inputs in [0, 1], got {eps!r}")
        alpha = 2.5 * eps / steps if alpha is None else _check_float(alpha, "alpha")
    for arg, value in (("entropic_penalty", entropic_penalty), ("ib_penalty", ib_penalty)):
        if value not in ("subtract", "add"):
            raise ValueError(f"{arg}: expected 'subtract' or 'add', got {value!r}")
    if ce_reduction not in ("mean", "sum"):
        raise ValueError(f"ce_reduction: expected 'mean' or 'sum', got {ce_reduction!r}")
    ib_cfg = resolve_ib_config(model, ib_config) if key == "pgd-ib" else None
    ent_cfg = resolve_entropic_config(model, entropic_config) if key == "pgd-entropic" else None
    if key == "pgd-ib" and x.shape[0] < 2:
        raise ValueError(f"x: pgd-ib's HSIC terms need at least 2 samples, got {x.shape[0]}")
    dev = _resolve_device(model, x, device)
    out: list[Tensor] = []
    with _attack_context(model, dev, seed), contextlib.ExitStack() as stack:
        with torch.no_grad():
            n_out = _logits(model, x[:1].to(dev)).shape[1]
        if int(y.max()) >= n_out:
            raise ValueError(f"y: expected class indices < {n_out} (the model's outputs), got {int(y.max())}")
        generator = torch.Generator().manual_seed(seed)
        if key == "pgd-ib":
            assert ib_cfg is not None
            objective = stack.enter_context(_ib_objective(model, ib_cfg, penalty=ib_penalty, ce_reduction=ce_reduction))
        elif key == "pgd-entropic":
            assert ent_cfg is not None
            objective = stack.enter_context(_entropic_objective(model, ent_cfg, penalty=entropic_penalty))
        elif key == "pgd-margin":
            objective = _margin_objective(model)
        else:
            objective = _ce_objective(model)
        slices = _slices(x.shape[0], batch_size, min_size=2 if key == "pgd-ib" else 1)
        bar = _progress_over(range(len(slices)), desc=key, progress=progress)
        for i in bar:
            sl = slices[i]
            xb, yb = x[sl].to(dev), y[sl].to(dev)
            if key == "cw-l2":
                adv = _cw_l2(model, xb, yb, c=c, kappa=kappa, steps=steps, lr=lr, search_steps=search_steps,
                             eot_samples=eot_samples)
            else:
                assert eps is not None and alpha is not None
                adv = _pgd(model, objective, xb, yb, eps=eps, alpha=alpha, steps=steps, random_start=random_start,
                           restarts=restarts, eot_samples=eot_samples, generator=generator, any_iterate=any_iterate)
            out.append(adv.detach().to(x.device, x.dtype))
    return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# Running specs (torchattacks and adaptive alike)
# --------------------------------------------------------------------------------------------------


def run_spec(
    model: nn.Module,
    spec: Any,
    x: Tensor,
    y: Tensor,
    *,
    ib_config: Any = None,
    entropic_config: Any = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    engine: str = "builtin",
) -> Tensor:
    """Run any :class:`~ib_plugins.evaluation.AttackSpec`: adaptive ones here, the rest via ``run_attack``.

    Args:
        model: the classifier.
        spec: an attack spec (from :func:`adaptive_spec` or :func:`ib_plugins.evaluation.build_suite`).
        x: inputs in ``[0, 1]``.
        y: class indices.
        ib_config: for ``pgd-ib`` specs.
        entropic_config: for ``pgd-entropic`` specs.
        batch_size: samples per attack call.
        seed: seed of the attack.
        device: where to run.
        progress: show tqdm bars.
        engine: the engine of non-adaptive specs (see :func:`ib_plugins.evaluation.run_attack`).

    Returns:
        Adversarial examples.

    Raises:
        TypeError: ``spec`` is not an AttackSpec.

    Example:
        >>> import torch, torch.nn as nn
        >>> from ib_plugins.evaluation import AttackSpec
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(4, 1, 4, 4), torch.arange(4) % 3
        >>> from ib_plugins.adaptive import adaptive_spec
        >>> specs = (AttackSpec("fgsm", "linf", 0.1), adaptive_spec("pgd-ce", eps=0.1))
        >>> [run_spec(model, s, x, y).shape[0] for s in specs]
        [4, 4]
    """
    from ib_plugins.evaluation import AttackSpec, run_attack

    if not isinstance(spec, AttackSpec):
        raise TypeError(f"spec: expected an AttackSpec, got {type(spec).__name__}")
    if is_adaptive_spec(spec):
        return run_adaptive_attack(
            model, spec.attack_class, x, y, eps=spec.eps, seed=seed, ib_config=ib_config,
            entropic_config=entropic_config, batch_size=batch_size, device=device, progress=progress,
            **dict(spec.kwargs),
        )
    return run_attack(model, spec, x, y, batch_size=batch_size, seed=seed, device=device, progress=progress,
                      engine=engine)


def _predict(model: nn.Module, x: Tensor, *, batch_size: int, dev: torch.device, seed: int = 0) -> Tensor:
    cuda = [dev.index or 0] if dev.type == "cuda" else []
    preds = []
    with _inference_modes(model), torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for i in range(0, x.shape[0], batch_size):
            preds.append(_logits(model, x[i : i + batch_size].to(dev)).argmax(1).to(x.device))
    return torch.cat(preds)


def evaluate_specs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Sequence[Any],
    *,
    ib_config: Any = None,
    entropic_config: Any = None,
    batch_size: int = 100,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
    keep_adversarial: bool = False,
    engine: str = "builtin",
) -> Any:
    """Like :func:`ib_plugins.evaluation.evaluate_suite`, for a mix of torchattacks and adaptive specs.

    Predictions are eval-mode argmaxes inside a forked RNG seeded with ``seed`` (so a stochastic
    model is scored reproducibly; wrap it in :class:`EOTModel` to score the averaged classifier).

    Args:
        model: the classifier.
        x: inputs in ``[0, 1]``.
        y: class indices.
        specs: attack specs with unique names.
        ib_config: for ``pgd-ib`` specs.
        entropic_config: for ``pgd-entropic`` specs.
        batch_size: samples per forward / attack call.
        seed: seed of every attack.
        device: where to run.
        progress: show tqdm bars.
        keep_adversarial: keep the adversarial examples in the result.
        engine: the engine of non-adaptive specs (see :func:`ib_plugins.evaluation.run_attack`).

    Returns:
        A :class:`~ib_plugins.evaluation.SuiteResult`.

    Raises:
        ValueError: duplicate names or bad inputs.

    Example:
        >>> import torch, torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % 3
        >>> from ib_plugins.adaptive import adaptive_spec
        >>> res = evaluate_specs(model, x, y, [adaptive_spec("pgd-ce", eps=0.0, steps=1)])
        >>> res["pgd-ce"].accuracy == res.clean_accuracy
        True
    """
    from ib_plugins._context import _resolve_device
    from ib_plugins._validation import _check_model, _check_xy
    from ib_plugins.evaluation import SuiteResult, _attack_result

    model = _check_model(model)
    x, y = _check_xy(x, y)
    specs = list(specs)
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"specs: expected unique attack names, got duplicates {dupes}")
    dev = _resolve_device(model, x, device)
    clean_ok = _predict(model, x, batch_size=batch_size, dev=dev, seed=seed) == y
    results = []
    kept: dict[str, Tensor] = {}
    correct: dict[str, Tensor] = {"clean": clean_ok}
    for spec in specs:
        start = time.perf_counter()
        adv = run_spec(model, spec, x, y, ib_config=ib_config, entropic_config=entropic_config,
                       batch_size=batch_size, seed=seed, device=device, progress=progress, engine=engine)
        seconds = time.perf_counter() - start
        adv_ok = _predict(model, adv, batch_size=batch_size, dev=dev, seed=seed) == y
        results.append(_attack_result(spec, x, y, adv, clean_ok, adv_ok, seconds))
        correct[spec.name] = adv_ok
        if keep_adversarial:
            kept[spec.name] = adv
    return SuiteResult(n=int(y.shape[0]), n_clean_correct=int(clean_ok.sum()), attacks=results, seed=seed,
                       adversarial=MappingProxyType(kept), correct=MappingProxyType(correct), engine=engine)
