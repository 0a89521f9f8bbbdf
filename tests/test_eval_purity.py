"""Eval-mode forwards of wrapped models are deterministic and make no autograd calls (house rule 4).

AutoAttack's own ``check_randomized`` and ``check_dynamic`` are called when pyautoattack is
installed; a self-contained replica of both checks always runs.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from _models import ConvNet, TinyResNet

from ib_plugins import ChannelMask, wrap_model

NUM_CLASSES = 4
AUTOGRAD_NAMES = {"grad", "backward", "_make_grads"}  # what pyautoattack's check_dynamic counts


def _xy(m: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, 3, 4, 4, generator=g), torch.arange(m) % NUM_CLASSES


def _trained_masked_model(frozen: bool):
    """A wrapped ConvNet with a channel mask, after one masked training step (records consumed)."""
    net = ConvNet(channels=16, num_classes=NUM_CLASSES)
    mask = ChannelMask(mode="code", k_low_y=2, k_high_x=2, every=1, skip_first=False)
    ib_model = wrap_model(net, ["features", "pool"], mask=mask, mask_layer="features", num_classes=NUM_CLASSES)
    x, y = _xy(seed=1)
    opt = torch.optim.SGD(ib_model.parameters(), lr=0.01)
    ib_model.train()
    with ib_model.labels(y):
        out = ib_model(x)
        loss = torch.nn.functional.cross_entropy(out, y) + ib_model.ib_loss(x, y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert mask.num_masked == 1
    if frozen:
        mask.freeze()
    return ib_model.eval()


def _tiny_resnet_model():
    return wrap_model(TinyResNet(num_classes=NUM_CLASSES), ["layer1.0.bn2", "layer2.0", "pool"],
                      num_classes=NUM_CLASSES).eval()


MODELS = {
    "mask-unfrozen": lambda: _trained_masked_model(frozen=False),
    "mask-frozen": lambda: _trained_masked_model(frozen=True),
    "tiny-resnet-no-mask": _tiny_resnet_model,
}


def _x_for(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(5)
    return torch.rand(8, 3, 8, 8, generator=g) if "resnet" in name else torch.rand(8, 3, 4, 4, generator=g)


class _RecordingLogger:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def warning(self, msg: str, *args: object) -> None:
        self.messages.append(msg % args if args else msg)

    info = debug = error = warning


@pytest.mark.parametrize("name", list(MODELS))
def test_pyautoattack_checks_flag_nothing(name, monkeypatch):
    checks = pytest.importorskip("pyautoattack.checks", reason="pyautoattack is not installed")
    ib_model = MODELS[name]()
    x = _x_for(name)
    y = torch.arange(8) % NUM_CLASSES
    # check_dynamic counts calls in a module-level dict that it never resets: start from zero.
    for key in list(checks.funcs):
        monkeypatch.setitem(checks.funcs, key, 0)
    logger = _RecordingLogger()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checks.check_randomized(ib_model, x, y, logger=logger)
        checks.check_dynamic(ib_model, x, False, logger=logger)
        checks.check_randomized(ib_model, x, y)  # the warnings path, too
        checks.check_dynamic(ib_model, x, False)
    assert logger.messages == []
    flagged = [str(w.message) for w in caught if "defense" in str(w.message)]
    assert flagged == []
    assert all(count == 0 for count in checks.funcs.values()), dict(checks.funcs)


@pytest.mark.parametrize("name", list(MODELS))
def test_eval_forward_is_deterministic_and_calls_no_autograd(name):
    ib_model = MODELS[name]()
    x = _x_for(name)
    rng_before = torch.get_rng_state()
    with torch.no_grad():
        first = ib_model(x)
    second = ib_model(x)  # gradients enabled, as in check_dynamic
    assert torch.equal(first, second)
    assert torch.equal(rng_before, torch.get_rng_state())

    calls: list[str] = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name in AUTOGRAD_NAMES:
            calls.append(f"{frame.f_code.co_filename}:{frame.f_code.co_name}")
        return None

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        third = ib_model(x)
    finally:
        sys.settrace(previous)
    assert calls == []
    assert torch.equal(first, third)
    assert ib_model.num_records == 0


@pytest.mark.parametrize("name", list(MODELS))
def test_eval_forward_never_reaches_torch_autograd_entry_points(name, monkeypatch):
    ib_model = MODELS[name]()
    x = _x_for(name)

    def forbidden(*args, **kwargs):
        raise AssertionError("an eval-mode forward called into torch.autograd")

    monkeypatch.setattr(torch.autograd, "grad", forbidden)
    monkeypatch.setattr(torch.autograd, "backward", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    with ib_model.labels(torch.arange(8) % NUM_CLASSES):  # labels given, but eval: still pure
        out = ib_model(x)
    assert out.shape == (8, NUM_CLASSES)


def test_unfrozen_mask_is_off_in_eval_and_frozen_mask_is_constant():
    unfrozen = _trained_masked_model(frozen=False)
    x = _x_for("mask")
    plain = unfrozen.model(x)  # the same model with its hooks still attached
    unfrozen.remove_hooks()
    assert torch.equal(plain, unfrozen.model(x))

    frozen = _trained_masked_model(frozen=True)
    outs = [frozen(x) for _ in range(3)]
    assert all(torch.equal(outs[0], o) for o in outs[1:])
    assert frozen.mask.num_masked == 1  # no mask was recomputed in eval


class _DynamicNet(torch.nn.Module):
    """Negative control: calls torch.autograd.grad and draws random noise in every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(48, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            z = x.detach().flatten(1).requires_grad_(True)
            (g,) = torch.autograd.grad(self.fc(z).sum(), z)
        return self.fc(x.flatten(1) + g.detach()) + torch.randn(x.shape[0], NUM_CLASSES)


def test_negative_control_the_checks_do_flag_a_dynamic_randomized_model(monkeypatch):
    checks = pytest.importorskip("pyautoattack.checks", reason="pyautoattack is not installed")
    net = _DynamicNet().eval()
    x = torch.rand(8, 3, 4, 4)
    for key in list(checks.funcs):
        monkeypatch.setitem(checks.funcs, key, 0)
    logger = _RecordingLogger()
    checks.check_randomized(net, x, torch.arange(8) % NUM_CLASSES, logger=logger)
    checks.check_dynamic(net, x, False, logger=logger)
    assert any("randomized" in m for m in logger.messages)
    assert any("dynamic" in m for m in logger.messages)


def test_negative_control_the_replica_tracer_sees_autograd_calls():
    net = _DynamicNet().eval()
    calls: list[str] = []

    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name in AUTOGRAD_NAMES:
            calls.append(frame.f_code.co_name)

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        net(torch.rand(4, 3, 4, 4))
    finally:
        sys.settrace(previous)
    assert "grad" in calls
