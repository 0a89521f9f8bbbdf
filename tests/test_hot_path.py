"""The training hot path: no host reads on accelerators, torch.compile, the cheap finite check.

A host read (``.item()``, ``bool(tensor)``, ``.cpu()``, Python branching on a value) stalls an
accelerator once per step. The ``meta`` device has no values at all, so any such read raises there:
running the whole IB + mask step on ``meta`` proves the accelerator path never reads one. CPU
tensors keep their eager checks (free on the host); those are tested in test_wrap.py.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ib_plugins import nhsic, wrap_model
from ib_plugins.bottleneck import ib_objective, labels_to_targets
from ib_plugins.channel_mask import select_channels
from ib_plugins.errors import NonFiniteActivationError


def _net(device: str = "cpu") -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).to(device)


def _batch(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(24, 1, 8, 8, generator=g), torch.arange(24) % 10
    if device == "meta":
        return torch.empty_like(x, device="meta"), torch.empty_like(y, device="meta")
    return x.to(device), y.to(device)


def _ib_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with model.labels(y):
        out = model(x)
    loss = F.cross_entropy(out, y) + model.ib_loss(x, y, output=out)
    loss.backward()
    return loss


# --------------------------------------------------------------------------------------------------
# No host reads where they would stall a device
# --------------------------------------------------------------------------------------------------
def test_meta_tensors_refuse_host_reads():
    """The premise of the tests below: a host read of a meta tensor raises."""
    t = torch.empty(3, device="meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        bool(t.sum() > 0)


@pytest.mark.parametrize("mask_layer", ["1", "4"], ids=["mask-on-8x8-map", "mask-on-1x1-map"])
def test_ib_and_mask_step_reads_no_host_value_off_cpu(mask_layer):
    model = wrap_model(_net("meta"), ["1", "4", "6"], num_classes=10, mask_layer=mask_layer, mask="code").train()
    model.mask.every, model.mask.skip_first = 1, False
    model.mask.k_low_y = model.mask.k_high_x = 2
    x, y = _batch("meta")
    loss = _ib_step(model, x, y)  # forward, mask selection, IB loss with its checks, backward
    assert loss.device.type == "meta" and model.mask.num_masked == 1
    assert all(p.grad is not None and p.grad.device.type == "meta" for p in model.parameters())


def test_labels_to_targets_checks_range_on_cpu_only():
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, num_classes\) = \[0, 3\)"):
        labels_to_targets(torch.tensor([0, 3]), 3)
    out = labels_to_targets(torch.empty(4, dtype=torch.long, device="meta"), 3)  # no host read
    assert out.shape == (4, 3)


def test_select_channels_on_1x1_maps_reads_no_host_value_off_cpu():
    f = torch.empty(16, 12, 1, 1, device="meta")
    keep = select_channels(
        f, torch.empty(16, 5, device="meta"), torch.empty(16, dtype=torch.long, device="meta"),
        num_classes=4, mode="code", k_low_y=2, k_high_x=2,
    )
    assert keep.shape == (12,) and keep.dtype == torch.bool


def test_1x1_mask_scores_agree_between_the_cpu_series_and_the_batched_solve(monkeypatch):
    """The accelerator path (one batched m×m solve) scores 1x1 maps as the CPU series path does."""
    from ib_plugins import channel_mask as cm

    g = torch.Generator().manual_seed(3)
    f = torch.randn(40, 32, 1, 1, generator=g, dtype=torch.float64)
    x, y = torch.rand(40, 6, generator=g, dtype=torch.float64), torch.arange(40) % 4
    series_ix, series_iy = cm.channel_scores(f, x, y, num_classes=4)
    monkeypatch.setattr(cm, "_scalar_channel_scores", lambda *args, **kwargs: None)  # as off CPU
    solve_ix, solve_iy = cm.channel_scores(f, x, y, num_classes=4)
    # The batched solve is the spec's estimator channel by channel (one-sided centring) ...
    onehot = F.one_hot(y, 4).double()
    loop_iy = torch.stack([nhsic(f[:, c], onehot) for c in range(32)])
    loop_ix = torch.stack([nhsic(x, f[:, c]) for c in range(32)])
    torch.testing.assert_close(solve_iy, loop_iy, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(solve_ix, loop_ix, rtol=1e-6, atol=1e-8)
    # ... and the CPU series (two-sided centring, equal up to O(eps) terms) agrees closely.
    torch.testing.assert_close(series_iy, solve_iy, rtol=2e-3, atol=1e-6)
    torch.testing.assert_close(series_ix, solve_ix, rtol=2e-3, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# The finite check reads the per-layer values, not the activations
# --------------------------------------------------------------------------------------------------
def test_check_finite_default_checks_on_cpu_and_names_the_layer():
    model = wrap_model(_net(), ["1", "4"], num_classes=10).train()
    assert model.check_finite is None
    x, y = _batch()
    with torch.no_grad():
        model.model[2].bias[3] = float("nan")  # NaN from the second conv on
    out = model(x)
    with pytest.raises(NonFiniteActivationError, match=r"layer '4' produced non-finite values"):
        model.ib_loss(x, y, output=out)


def test_check_finite_blames_the_inputs_when_activations_are_finite():
    torch.manual_seed(0)
    model = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU()), ["2"], num_classes=10).train()
    x, y = _batch()
    x_bad = x.clone()
    x_bad[0, 0, 0, 0] = float("inf")  # only the X of I(X, T) sees it
    out = model(x)
    with pytest.raises(NonFiniteActivationError, match=r"layer\(s\) '2' are non-finite although .*inputs x hold NaN/inf"):
        model.ib_loss(x_bad, y, output=out)


def test_check_finite_rejects_non_bool():
    with pytest.raises(TypeError, match=r"check_finite: expected None, True or False, got 'yes'"):
        wrap_model(_net(), ["1"], num_classes=10, check_finite="yes")


def test_check_finite_true_checks_off_cpu_too():
    """check_finite=True asks for the check everywhere, so on meta (no values) it must try a host read."""
    model = wrap_model(_net("meta"), ["1"], num_classes=10, check_finite=True).train()
    x, y = _batch("meta")
    out = model(x)
    with pytest.raises((RuntimeError, NotImplementedError)):
        model.ib_loss(x, y, output=out)


# --------------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------------
def _compile_backends() -> list:
    have_cxx = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    inductor_marks = [pytest.mark.slow]
    if not have_cxx:
        inductor_marks.append(pytest.mark.skip(reason="the inductor backend needs a C++ compiler; none on PATH"))
    return ["aot_eager", pytest.param("inductor", marks=inductor_marks)]


@pytest.mark.parametrize("backend", _compile_backends())
def test_ib_objective_compiles_as_one_graph(backend):
    """fullgraph=True fails on any graph break, so this also shows the maths branches on no value.

    Gradients are compared in float64, where a correct compilation agrees with eager mode to
    rounding (float32 gradients of nHSIC with eps = 1e-5 are themselves only good to a few %).
    """
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(5)
    acts = [torch.randn(32, 8, 4, 4, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(32, 16, generator=g, dtype=torch.float64, requires_grad=True)]
    x = torch.rand(32, 1, 8, 8, generator=g, dtype=torch.float64)
    t = labels_to_targets(torch.arange(32) % 10, 10, dtype=torch.float64)
    compiled = torch.compile(ib_objective, fullgraph=True, backend=backend)
    got = compiled(acts, x, t, alpha=0.008, beta=0.08)
    grads = torch.autograd.grad(got.loss, acts)
    ref = ib_objective(acts, x, t, alpha=0.008, beta=0.08)
    ref_grads = torch.autograd.grad(ref.loss, acts)
    for a, b in zip((got.loss, got.hx, got.hy, *grads), (ref.loss, ref.hx, ref.hy, *ref_grads)):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)
    # float32 values (what training uses) agree to float32 accuracy.
    acts32 = [a.detach().float() for a in acts]
    got32 = compiled(acts32, x.float(), t.float(), alpha=0.008, beta=0.08)
    torch.testing.assert_close(got32.hx, ref.hx.float(), rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(got32.hy, ref.hy.float(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("how", ["compile-the-wrapper", "compile-the-inner-model"])
@pytest.mark.parametrize("backend", _compile_backends())
def test_compiled_wrapped_model_trains_like_eager(backend, how):
    torch._dynamo.reset()
    x, y = _batch()
    eager = wrap_model(_net(), ["1", "4"], num_classes=10).train()
    ref_loss = _ib_step(eager, x, y)

    model = wrap_model(_net(), ["1", "4"], num_classes=10).train()
    if how == "compile-the-wrapper":
        runner = torch.compile(model, backend=backend)
    else:
        model.model.compile(backend=backend)
        runner = model
    for _ in range(2):  # the second call runs the cached graph
        model.zero_grad(set_to_none=True)
        out = runner(x)
        loss = F.cross_entropy(out, y) + model.ib_loss(x, y, output=out)
        loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)  # float32, reassociated sums
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    runner.eval()
    with torch.no_grad():
        torch.testing.assert_close(runner(x), eager.eval()(x), rtol=1e-5, atol=1e-5)
    assert model.num_records == 0  # eval forwards are not recorded
    model.unwrap()
    assert sum(len(m._forward_hooks) for m in model.model.modules()) == 0


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_wrapped_forward_traces_without_graph_breaks(train):
    torch._dynamo.reset()
    model = wrap_model(_net(), ["1", "4"], num_classes=10).train(train)
    explained = torch._dynamo.explain(model)(_batch()[0])
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.gpu
def test_ib_and_mask_step_does_not_synchronise_on_cuda():
    model = wrap_model(_net("cuda"), ["1", "4", "6"], num_classes=10, mask_layer="4", mask="code").train()
    model.mask.every, model.mask.skip_first = 1, False
    model.mask.k_low_y = model.mask.k_high_x = 2
    x, y = _batch("cuda")
    _ib_step(model, x, y)  # warm-up (lazy CUDA initialisation synchronises)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _ib_step(model, x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_graph_compiled_for_a_hook_free_instance_is_not_replayed_for_the_wrapped_one():
    # dynamo does not guard on the hooks of inner layers: a graph compiled for an unwrapped instance
    # of the same class used to be replayed for the wrapped one, with no hook firing (ib_loss then
    # raised LayerNotFiredError naming torch.compile). The wrapper's own hooks on the network's top
    # level are read by the module call dynamo traces, so that graph is not reused: every layer
    # fires and the loss equals the eager one.
    torch._dynamo.reset()
    x, y = _batch()
    eager = wrap_model(_net(), ["1", "4"], num_classes=10).train()
    ref = eager.ib_loss(x, y, output=eager(x))
    plain = _net().train()
    plain.compile(backend="eager")
    plain(x)
    model = wrap_model(_net(), ["1", "4"], num_classes=10).train()
    model.model.compile(backend="eager")
    try:
        out = model(x)
        assert model.find_record(out).fired == {"1", "4"}
        torch.testing.assert_close(model.ib_loss(x, y, output=out), ref, rtol=1e-4, atol=1e-6)
    finally:
        torch._dynamo.reset()
