"""The evaluation context: eval modes, paused IB recording, forked RNGs, untouched gradients and the device.

Every evaluator (attack suites, AutoAttack, RobustBench, adaptive attacks, audits, entropy metrics) runs
a user's model inside :func:`_inference_modes` (and, when it draws random numbers, inside
:func:`_attack_context`, which also forks and seeds the RNGs); the trainer's attacks use the lighter
:func:`_eval_mode` and :func:`_no_record`, which leave the trainer's own RNG streams running.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins.wrap import IBModel


# Modes, paused recording, untouched gradients and RNGs
def _cuda_rng_devices() -> list[int]:
    """Indices of the CUDA devices whose generators may have been used (none before CUDA is initialised)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return list(range(torch.cuda.device_count()))
    return []


def _unique_parameters(modules: Sequence[nn.Module]) -> list[nn.Parameter]:
    """The parameters of ``modules`` (the list of ``model.modules()``), each once, as ``model.parameters()``.

    Reads each module's own ``_parameters``: a fraction of the cost of ``model.parameters()``, which
    walks the module tree again.
    """
    seen: set[int] = set()
    params = []
    for m in modules:
        for p in m._parameters.values():
            if p is not None and id(p) not in seen:
                seen.add(id(p))
                params.append(p)
    return params


@contextmanager
def _untouched_grads_and_rngs(model: nn.Module, *, modules: Sequence[nn.Module] | None = None) -> Iterator[None]:
    """Give back every parameter's ``.grad`` and ``requires_grad`` and the global RNG states on exit.

    On entry each parameter's ``.grad`` is set aside by reference (no copy, no host read) and
    replaced by None: torch accumulates into an existing ``.grad`` in place, so an evaluation whose
    attack calls ``loss.backward()`` (torchattacks' CW and FAB, AutoAttack's FAB/FAB-T) writes into
    fresh tensors instead of the caller's gradients. On exit, also after an exception, those fresh
    gradients are dropped and the original ``.grad`` objects (None included) and ``requires_grad``
    flags are put back, so an evaluation between ``loss.backward()`` and ``optimizer.step()`` does
    not change the update. The global RNGs are given back too: torch's CPU generator and those of
    the initialised CUDA devices (a randomised model drawing noise in its eval forward would
    otherwise advance them), Python's ``random`` and, only when ``numpy.random`` is already
    imported, numpy's legacy global generator (numpy is never imported here).

    Not for the training hot path: the cost is one Python pass over the parameters per entry.
    ``modules``: ``list(model.modules())`` when the caller has it already (saves a walk of the tree).
    """
    import random
    import sys

    params = _unique_parameters(list(model.modules()) if modules is None else modules)
    grads = [p.grad for p in params]
    flags = [p.requires_grad for p in params]
    np_random = sys.modules.get("numpy.random")
    np_state = np_random.get_state() if np_random is not None else None
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=_cuda_rng_devices()):
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = None
            yield
    finally:
        try:
            for p, g, flag in zip(params, grads, flags):
                if p.requires_grad != flag:
                    p.requires_grad_(flag)
                if p.grad is not g:
                    p.grad = g
        finally:
            random.setstate(py_state)
            if np_random is not None:
                np_random.set_state(np_state)


@contextmanager
def _inference_modes(model: nn.Module) -> Iterator[None]:
    """Eval mode with IBModel recording paused; the model and the process given back as found on exit.

    Every submodule's ``training`` flag is restored on exit, also after an exception. Recording
    stays paused even if code inside switches the model to train mode (e.g. an attack configured to
    run in train mode). Every parameter's ``.grad`` (None included) and ``requires_grad`` and the
    global RNGs (torch CPU/CUDA, Python ``random``, numpy's if imported) are given back as well, see
    :func:`_untouched_grads_and_rngs`. Shared by the evaluators (attack suites, AutoAttack,
    RobustBench, adaptive attacks, audits, entropy metrics), so an evaluation neither records
    activations, nor leaves the model in another mode than it found it, nor changes the gradients
    of a pending optimiser step, nor moves a seeded script's random streams.
    """
    # Evaluators enter this a few times per attack: touch (slow) nn.Module.__setattr__ only where
    # a flag actually changes.
    modules = list(model.modules())
    modes = [m.training for m in modules]
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_untouched_grads_and_rngs(model, modules=modules))
            for m in modules:
                if isinstance(m, IBModel):
                    stack.enter_context(m.capturing(False))
            if any(modes):
                model.eval()
            yield
    finally:
        for m, training in zip(modules, modes):
            if m.training != training:
                m.training = training



@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, restoring every submodule's own flag afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes.items():
            m.training = mode


def _no_record(model: nn.Module) -> Any:
    return model.capturing(False) if isinstance(model, IBModel) else _null_context()


@contextmanager
def _null_context() -> Iterator[None]:
    yield



# Devices and the seeded attack context
def _module_device(model: nn.Module) -> torch.device | None:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def _resolve_device(
    model: nn.Module, x: Tensor, device: torch.device | str | None, *, why: str = "the attack is built on one device"
) -> torch.device:
    """The device an evaluation runs on: ``device``, else the model's, else the inputs'; a mismatch is an error.

    ``why`` ends the mismatch message (in parentheses): what needs the one device.
    """
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
        f"({why})"
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

