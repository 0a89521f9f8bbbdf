"""Tests for ib_plugins.entropic (entropic retraining, Sperl & Böttinger; spec §4)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ib_plugins.entropic import (
    EntropicLoss,
    EntropicLossTerms,
    EntropyProbe,
    compute_reference_entropy_flow,
    entropy_flow,
    entropy_flow_terms,
    entropy_terms,
    layer_entropy,
    normalized_entropy,
)
from ib_plugins.errors import IBPluginsError, LayerNotFiredError, NonFiniteActivationError, UnknownLayerError


def _mlp(width: int = 16, inplace: bool = False) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(6, width), nn.ReLU(inplace=inplace), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4)
    )


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules()
    )


# ------------------------------------------------------------------ phi and E(h)


def test_phi_matches_h_log_h_for_positive_values() -> None:
    h = torch.rand(1000, dtype=torch.float64) * 5 + 1e-6
    for mode in ("relu", "abs", "strict"):
        torch.testing.assert_close(entropy_terms(h, mode=mode), h * torch.log(h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["relu", "abs", "strict"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_value_and_gradient_at_exact_zero_are_finite_and_gradient_is_zero(mode: str, dtype: torch.dtype) -> None:
    h = torch.tensor([0.0, 0.0, 0.25, 1.0, 2.0], dtype=dtype, requires_grad=True)
    phi = entropy_terms(h, mode=mode)
    assert torch.isfinite(phi).all()
    assert phi[0] == 0 and phi[1] == 0
    phi.sum().backward()
    assert h.grad is not None and torch.isfinite(h.grad).all()
    assert h.grad[0] == 0 and h.grad[1] == 0
    pos = h.detach()[2:]
    torch.testing.assert_close(h.grad[2:], torch.log(pos) + 1)


def test_zero_gradient_through_relu_layer_is_not_nan() -> None:
    # Spec §4.2: with a naive h*log(h), NaN would flow back through ReLU as 0*NaN.
    lin = nn.Linear(3, 8)
    x = torch.randn(4, 3)
    h = torch.relu(lin(x))
    assert (h == 0).any()
    layer_entropy(h).sum().backward()
    assert torch.isfinite(lin.weight.grad).all() and torch.isfinite(lin.bias.grad).all()


def test_nan_activations_propagate() -> None:
    h = torch.tensor([[float("nan"), 0.5]])
    assert torch.isnan(layer_entropy(h)).all()


def test_negative_values_relu_abs_strict() -> None:
    h = torch.tensor([-0.5, -2.0, 0.5], dtype=torch.float64)
    relu = entropy_terms(h, mode="relu")
    assert relu[0] == 0 and relu[1] == 0
    torch.testing.assert_close(relu[2], torch.tensor(0.5 * math.log(0.5), dtype=torch.float64))
    torch.testing.assert_close(entropy_terms(h, mode="abs"), h.abs() * torch.log(h.abs()))
    with pytest.raises(ValueError, match=r"mode='strict': layer 'block1\.relu' has negative activations"):
        entropy_terms(h, mode="strict", name="block1.relu")
    with pytest.raises(ValueError, match=r"layer 'x' has negative .*mode='relu'.*mode='abs'"):
        layer_entropy(h[None], mode="strict", name="x")


def test_abs_mode_gradient_finite_at_zero() -> None:
    h = torch.tensor([0.0, -0.3, 0.3], requires_grad=True)
    entropy_terms(h, mode="abs").sum().backward()
    assert torch.isfinite(h.grad).all() and h.grad[0] == 0
    torch.testing.assert_close(h.grad[1], -(math.log(0.3) + 1) * torch.ones(()))


def test_unknown_mode_lists_valid_modes() -> None:
    with pytest.raises(ValueError, match=r"mode: expected one of 'relu', 'abs', 'strict', got 'softmax'"):
        entropy_terms(torch.ones(2), mode="softmax")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"mode: expected one of"):
        entropy_flow([torch.ones(1, 2), torch.ones(1, 2)], mode="log")  # type: ignore[arg-type]


def test_non_float_input_is_rejected() -> None:
    with pytest.raises(TypeError, match=r"expected a real floating-point tensor, got dtype torch.int64"):
        entropy_terms(torch.ones(2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"expected a torch.Tensor, got list"):
        entropy_terms([0.5])  # type: ignore[arg-type]


def test_layer_entropy_sums_all_non_batch_elements_per_sample() -> None:
    h = torch.rand(3, 2, 4, 5, dtype=torch.float64)
    expected = -(h * h.log()).reshape(3, -1).sum(1)
    torch.testing.assert_close(layer_entropy(h), expected)
    uniform = torch.full((2, 10), 0.1)
    torch.testing.assert_close(layer_entropy(uniform), torch.full((2,), math.log(10)))
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, \.\.\.\) .* got shape \(4,\)"):
        layer_entropy(torch.rand(4))


# ------------------------------------------------------------------ E_T and E_N


@pytest.mark.parametrize("m", [2, 3, 5, 8])
def test_telescoping_identity(m: int) -> None:
    g = torch.Generator().manual_seed(m)
    shapes = [(7, 3, 4, 4), (7, 20), (7, 5, 2), (7, 9), (7, 1, 6), (7, 13), (7, 2, 2, 2), (7, 11)]
    hs = [torch.rand(shapes[i], generator=g, dtype=torch.float64) * 2 for i in range(m - 1)]
    hs.append(torch.softmax(torch.randn(7, 10, generator=g, dtype=torch.float64), dim=1))
    ents = [layer_entropy(h) for h in hs]
    explicit = sum(ents[i] - ents[i + 1] for i in range(m - 1)) / (m - 1)
    terms = entropy_flow_terms(hs)
    assert terms.shape == (7, m - 1)
    torch.testing.assert_close(entropy_flow(hs), explicit)
    torch.testing.assert_close(terms.mean(dim=1), explicit)
    torch.testing.assert_close(entropy_flow(hs), (ents[0] - ents[-1]) / (m - 1))


def test_intermediate_layers_only_set_m() -> None:
    h1, out = torch.rand(4, 8), torch.softmax(torch.randn(4, 3), dim=1)
    a = entropy_flow([h1, torch.rand(4, 5), torch.rand(4, 2), out])
    b = entropy_flow([h1, torch.rand(4, 50) * 9, torch.zeros(4, 1), out])
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a * 3, entropy_flow([h1, out]))


def test_entropy_flow_gradient_reaches_only_first_and_last() -> None:
    hs = [torch.rand(2, 4, requires_grad=True) for _ in range(3)]
    entropy_flow(hs).sum().backward()
    assert hs[0].grad is not None and hs[0].grad.abs().sum() > 0
    assert hs[1].grad is None
    assert hs[2].grad is not None and hs[2].grad.abs().sum() > 0


def test_entropy_flow_strict_checks_intermediate_layers_by_name() -> None:
    hs = [torch.rand(2, 3), -torch.rand(2, 3), torch.rand(2, 3)]
    entropy_flow(hs)  # relu: fine
    with pytest.raises(ValueError, match=r"layer 'hs\[1\]' has negative activations"):
        entropy_flow(hs, mode="strict")
    with pytest.raises(ValueError, match=r"layer 'features\.2' has negative"):
        entropy_flow(hs, mode="strict", names=["a", "features.2", "softmax"])


def test_entropy_flow_input_errors() -> None:
    with pytest.raises(ValueError, match=r"expected at least 2 layers .* got 1"):
        entropy_flow([torch.rand(2, 3)])
    with pytest.raises(ValueError, match=r"expected at least 2 layers"):
        entropy_flow_terms([torch.rand(2, 3)])
    with pytest.raises(ValueError, match=r"hs\[1\]: expected batch size 2 .* got shape \(3, 3\)"):
        entropy_flow([torch.rand(2, 3), torch.rand(3, 3)])
    with pytest.raises(TypeError, match=r"hs: expected a sequence of per-layer tensors"):
        entropy_flow(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"names: expected a sequence of 2 layer names"):
        entropy_flow([torch.rand(2, 3), torch.rand(2, 3)], names=["a"])


def test_normalized_entropy_by_hand() -> None:
    h1 = torch.tensor([[0.5, 0.0, 0.25, 0.25]], dtype=torch.float64)  # N_1 = 4
    h2 = torch.tensor([[[0.1, 0.9]], [[0.1, 0.9]]], dtype=torch.float64)[:1]  # shape (1, 1, 2), N_2 = 2
    e1 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    e2 = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    expected = (e1 / 4 + e2 / 2) / 2
    torch.testing.assert_close(normalized_entropy([h1, h2]), torch.tensor([expected], dtype=torch.float64))
    torch.testing.assert_close(normalized_entropy([h1]), torch.tensor([e1 / 4], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected at least 1 layer, got 0"):
        normalized_entropy([])


# ------------------------------------------------------------------ EntropyProbe


def test_probe_returns_hidden_layers_plus_softmax_and_removes_hooks() -> None:
    model = _mlp()
    x = torch.randn(5, 6)
    with EntropyProbe(model, ["1", "3"]) as probe:
        assert probe.active
        assert len(model[1]._forward_hooks) == 1
        logits, hs = probe.run(x)
    assert _no_hooks(model) and not probe.active
    assert len(hs) == 3
    torch.testing.assert_close(hs[0], torch.relu(model[0](x)))
    torch.testing.assert_close(hs[-1], torch.softmax(logits, dim=1))
    torch.testing.assert_close(hs[-1].sum(dim=1), torch.ones(5))
    assert (hs[-1] > 0).all()


def test_probe_removes_hooks_after_exception() -> None:
    model = _mlp()
    with pytest.raises(RuntimeError, match="boom"):
        with EntropyProbe(model, ["1", "3"]) as probe:
            probe.run(torch.randn(2, 6))
            raise RuntimeError("boom")
    assert _no_hooks(model)
    # an exception inside the model's forward, too
    with pytest.raises(RuntimeError):
        with EntropyProbe(model, ["1"]) as probe:
            probe.run(torch.randn(2, 5))  # wrong feature size
    assert _no_hooks(model)


def test_probe_clones_against_inplace_ops() -> None:
    model = _mlp(inplace=True)
    x = torch.randn(8, 6)
    with EntropyProbe(model, ["0"]) as probe:
        _, hs = probe.run(x)
    pre = model[0](x)
    assert (pre < 0).any()
    torch.testing.assert_close(hs[0], pre)  # not overwritten by the in-place ReLU


def test_probe_keeps_autograd_graph() -> None:
    model = _mlp()
    with EntropyProbe(model, ["1"]) as probe:
        _, hs = probe.run(torch.randn(4, 6))
    entropy_flow(hs).mean().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_probe_unknown_layer_lists_close_matches() -> None:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    with pytest.raises(UnknownLayerError, match=r"'features\.2' is not a submodule of Sequential\. Close matches: "
                       r"'features\.1', 'features\.0'"):
        EntropyProbe(model, ["features.2"])
    with pytest.raises(ValueError, match=r"not a submodule"):  # also a ValueError
        EntropyProbe(model, ["nope"])
    assert issubclass(UnknownLayerError, IBPluginsError)


def test_probe_argument_errors() -> None:
    model = _mlp()
    with pytest.raises(TypeError, match=r"layers: expected a sequence of dotted layer names, got the string '1'"):
        EntropyProbe(model, "1")
    with pytest.raises(ValueError, match=r"layers: expected at least one hidden layer name"):
        EntropyProbe(model, [])
    with pytest.raises(ValueError, match=r"duplicates \['1'\]"):
        EntropyProbe(model, ["1", "1"])
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module"):
        EntropyProbe(lambda x: x, ["1"])  # type: ignore[arg-type]
    probe = EntropyProbe(model, ["1"])
    with pytest.raises(RuntimeError, match=r"not active"):
        probe.run(torch.randn(1, 6))
    with probe:
        with pytest.raises(RuntimeError, match=r"already active"):
            probe.__enter__()
    assert _no_hooks(model)


def test_probe_layer_not_fired() -> None:
    model = _mlp()
    with EntropyProbe(model, ["1"]) as probe:
        with pytest.raises(LayerNotFiredError, match=r"\['1'\] of Sequential did not run"):
            probe.collect(torch.randn(2, 4))
        _, hs = probe.run(torch.randn(2, 6))
        with pytest.raises(LayerNotFiredError):  # reading cleared the store
            probe.collect(torch.randn(2, 4))
    assert _no_hooks(model)


# ------------------------------------------------------------------ EntropicLoss


def _batch(model: nn.Module, layers: list[str], n: int = 8) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    x, y = torch.randn(n, 6), torch.randint(0, 4, (n,))
    with EntropyProbe(model, layers) as probe:
        logits, hs = probe.run(x)
    return logits, y, hs


def test_loss_equals_ce_when_lambda_is_zero() -> None:
    model = _mlp()
    logits, y, hs = _batch(model, ["1", "3"])
    loss = EntropicLoss(reference=3.0, lam=0.0)(logits, y, hs)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))


def test_loss_gradient_flows_to_model_parameters() -> None:
    model = _mlp()
    logits, y, hs = _batch(model, ["1", "3"])
    terms = EntropicLoss(reference=5.0, lam=1.0, sigma=1.65).terms(logits, y, hs)
    assert isinstance(terms, EntropicLossTerms)
    assert terms.et.shape == (8,) and terms.penalty > 0
    terms.penalty.backward(retain_graph=True)  # the penalty alone reaches the first layer
    assert model[0].weight.grad.abs().sum() > 0
    model.zero_grad()
    terms.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    torch.testing.assert_close(terms.loss, terms.ce + terms.penalty)
    torch.testing.assert_close(terms.et_mean, entropy_flow(hs).mean())


def test_penalty_is_zero_at_target() -> None:
    model = _mlp()
    logits, y, hs = _batch(model, ["1"])
    et = entropy_flow(hs).detach().double()
    sigma = 1.65
    loss_fn = EntropicLoss(reference=float(et.mean()) / sigma, sigma=sigma)
    t = loss_fn.terms(logits, y, hs)
    assert float(t.penalty.detach()) < 1e-10
    torch.testing.assert_close(t.loss, t.ce)
    # per_sample: zero only when every sample sits at the target -> repeat one sample
    hs1 = [h[:1].expand(4, *h.shape[1:]) for h in hs]
    logits1, y1 = logits[:1].expand(4, -1), y[:1].expand(4)
    ref1 = float(entropy_flow(hs1)[0].detach()) / sigma
    per = EntropicLoss(reference=ref1, sigma=sigma, reduction="per_sample").terms(logits1, y1, hs1)
    assert float(per.penalty.detach()) < 1e-10
    # ... and otherwise per_sample >= batch_mean (Jensen)
    ref = 0.1
    bm = EntropicLoss(reference=ref).terms(logits, y, hs).penalty
    ps = EntropicLoss(reference=ref, reduction="per_sample").terms(logits, y, hs).penalty
    assert ps >= bm


def test_penalty_matches_formula() -> None:
    model = _mlp()
    logits, y, hs = _batch(model, ["1", "3"])
    et = entropy_flow(hs)
    t = EntropicLoss(reference=2.0, lam=3.0, sigma=1.5).terms(logits, y, hs)
    torch.testing.assert_close(t.target, torch.tensor(3.0))
    torch.testing.assert_close(t.penalty, (et.mean() - 3.0) ** 2)
    torch.testing.assert_close(t.loss, F.cross_entropy(logits, y) + 3.0 * (et.mean() - 3.0) ** 2)
    tp = EntropicLoss(reference=2.0, lam=3.0, sigma=1.5, reduction="per_sample").terms(logits, y, hs)
    torch.testing.assert_close(tp.penalty, ((et - 3.0) ** 2).mean())


def test_warning_when_reference_not_positive_and_abs_target() -> None:
    with pytest.warns(UserWarning, match=r"<= 0, so sigma > 1 then \*decreases\* the target.*target='abs'"):
        faithful = EntropicLoss(reference=-2.0, sigma=1.5)
    torch.testing.assert_close(faithful.target_value(), torch.tensor(-3.0))
    with pytest.warns(UserWarning, match=r"sigma has no effect"):
        EntropicLoss(reference=0.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alt = EntropicLoss(reference=-2.0, sigma=1.5, target="abs")  # explicit choice: no warning
        EntropicLoss(reference=2.0, sigma=1.5)
    torch.testing.assert_close(alt.target_value(), torch.tensor(-1.0))  # -2 + 2 * 0.5: increased
    same = EntropicLoss(reference=2.0, sigma=1.5, target="abs")
    torch.testing.assert_close(same.target_value(), torch.tensor(3.0))  # equals faithful for ref > 0


def test_reference_is_a_frozen_buffer() -> None:
    loss_fn = EntropicLoss(reference=1.25)
    assert "reference" in dict(loss_fn.named_buffers())
    assert list(loss_fn.parameters()) == []
    assert not loss_fn.reference.requires_grad
    assert loss_fn.double().reference.dtype == torch.float64
    assert float(loss_fn.reference) == 1.25
    assert EntropicLoss(reference=torch.tensor(0.5)).reference.item() == 0.5


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"reference": float("nan")}, ValueError, r"reference: expected a finite E_T_ref, got nan"),
        ({"reference": float("inf")}, ValueError, r"reference: expected a finite"),
        ({"reference": "1.0"}, TypeError, r"reference: expected a real number, got str"),
        ({"reference": 1.0, "lam": -0.1}, ValueError, r"lam: expected a finite number >= 0, got -0.1"),
        ({"reference": 1.0, "sigma": 0.0}, ValueError, r"sigma: expected a finite number > 0, got 0.0"),
        ({"reference": 1.0, "sigma": True}, TypeError, r"sigma: expected a real number, got bool"),
        ({"reference": 1.0, "reduction": "sum"}, ValueError, r"reduction: expected one of 'batch_mean', "
                                                            r"'per_sample', got 'sum'"),
        ({"reference": 1.0, "target": "up"}, ValueError, r"target: expected one of 'faithful', 'abs', got 'up'"),
        ({"reference": 1.0, "mode": "softmax"}, ValueError, r"mode: expected one of"),
    ],
)
def test_loss_bad_arguments(kwargs: dict, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        EntropicLoss(**kwargs)


def test_loss_keyword_only_and_batch_mismatch() -> None:
    with pytest.raises(TypeError):
        EntropicLoss(1.0)  # type: ignore[misc]
    hs = [torch.rand(3, 2), torch.softmax(torch.randn(3, 4), 1)]
    with pytest.raises(ValueError, match=r"hs: expected batch size 2 \(that of logits\), got 3"):
        EntropicLoss(reference=1.0)(torch.randn(2, 4), torch.tensor([0, 1]), hs)


@pytest.mark.parametrize("reference", [1e20, -1e20, 1e200, 1e300, 6e18])
def test_huge_reference_is_rejected_at_construction_not_returned_as_inf(reference: float) -> None:
    """Issue 11, item 4: (E_T_hat - sigma * E_T_ref)**2 overflowed float32 to inf at every step."""
    with pytest.raises(ValueError, match=r"reference: expected \|E_T_ref\| and \|target\| <= 9.22e\+18 .*float32"):
        EntropicLoss(reference=reference, sigma=1.65 if abs(reference) > 1e19 else 2.0)


def test_largest_allowed_reference_gives_a_finite_loss() -> None:
    logits = torch.randn(4, 3)
    hs = [torch.rand(4, 5), torch.softmax(logits, 1)]
    loss = EntropicLoss(reference=5e18, sigma=1.65)(logits, torch.tensor([0, 1, 2, 0]), hs)
    assert torch.isfinite(loss)


def test_overflowing_penalty_from_finite_activations_is_named() -> None:
    logits = torch.randn(4, 3)
    hs = [torch.rand(4, 5) * 1e30, torch.softmax(logits, 1)]  # E(h) ~ -1e32: its square overflows float32
    with pytest.raises(NonFiniteActivationError, match=r"^hs: the activations are finite but the .* overflows"):
        EntropicLoss(reference=1.0)(logits, torch.tensor([0, 1, 2, 0]), hs)
    hs64 = [h.double() for h in hs]  # the same activations fit in float64
    assert torch.isfinite(EntropicLoss(reference=1.0)(logits.double(), torch.tensor([0, 1, 2, 0]), hs64))


def test_non_finite_activations_and_bad_arguments_are_named_by_the_loss() -> None:
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    hs = [torch.rand(4, 5), torch.softmax(logits, 1)]
    loss_fn = EntropicLoss(reference=1.0)
    bad = [hs[0].clone().fill_(float("nan")), hs[1]]
    with pytest.raises(NonFiniteActivationError, match=r"^hs\[0\]: expected finite activations, got NaN or inf"):
        loss_fn(logits, y, bad)
    assert torch.isnan(EntropicLoss(reference=1.0, check_finite=False)(logits, y, bad))  # opt-out: propagates
    with pytest.raises(TypeError, match=r"^logits: expected a floating-point tensor \(B, C\), got list"):
        loss_fn(logits.tolist(), y, hs)
    with pytest.raises(TypeError, match=r"^targets: expected integer class indices .*, got dtype torch.bool"):
        loss_fn(logits, y.bool(), hs)
    with pytest.raises(ValueError, match=r"^logits: expected a non-empty batch"):
        loss_fn(logits[:0], y[:0], [h[:0] for h in hs])
    with pytest.raises(TypeError, match="check_finite"):
        EntropicLoss(reference=1.0, check_finite="yes")


def test_normalized_entropy_rejects_zero_width_layers() -> None:
    """E_N divides by N_i: a layer with no elements per sample gave 0/0 = NaN."""
    hs = [torch.rand(4, 0), torch.softmax(torch.randn(4, 3), 1)]
    with pytest.raises(ValueError, match=r"layer 'hs\[0\]': expected at least one element per sample"):
        normalized_entropy(hs)
    assert torch.isfinite(entropy_flow(hs)).all()  # E_T: an empty layer has E = 0


@pytest.mark.parametrize(("dtype", "scale"), [(torch.float64, 1e300), (torch.float64, 1e154), (torch.float32, 1e30),
                                              (torch.float32, 1e-30), (torch.float64, 1e-30)])
def test_entropies_of_huge_and_tiny_activations_are_finite(dtype, scale) -> None:
    h = torch.rand(3, 2, 2, 2, dtype=torch.float64) * scale
    hs = [h.to(dtype), torch.softmax(torch.randn(3, 4, dtype=dtype), 1)]
    flat = hs[0].double().flatten(1)
    e1 = -(flat * flat.log()).sum(1)
    e2 = -(hs[1].double() * hs[1].double().log()).sum(1)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(entropy_flow(hs).double(), e1 - e2, rtol=rtol, atol=1e-6)
    assert torch.isfinite(normalized_entropy(hs)).all()


# ------------------------------------------------------------------ reference value


def test_reference_matches_manual_mean_and_is_sample_weighted() -> None:
    model = _mlp()
    x = torch.randn(10, 6)
    batches = [(x[:4], None), (x[4:8], None), (x[8:], None)]  # uneven last batch
    ref = compute_reference_entropy_flow(model, batches, layers=["1", "3"], progress=False)
    with torch.no_grad(), EntropyProbe(model, ["1", "3"]) as probe:
        _, hs = probe.run(x)
    assert ref == pytest.approx(float(entropy_flow(hs).double().mean()), rel=1e-5)
    # bare tensors as batches work too
    ref2 = compute_reference_entropy_flow(model, [x[:5], x[5:]], layers=["1", "3"], progress=False)
    assert ref2 == pytest.approx(ref, rel=1e-5)


def test_reference_restores_modes_rng_and_hooks() -> None:
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 4))
    model.train()
    model[2].eval()  # mixed modes are restored module by module
    data = TensorDataset(torch.randn(20, 6), torch.randint(0, 4, (20,)))
    loader = DataLoader(data, batch_size=6, shuffle=True)
    state = torch.get_rng_state()
    ref1 = compute_reference_entropy_flow(model, loader, layers=["1"])  # progress bar on (tqdm if present)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and model[0].training and not model[2].training
    assert _no_hooks(model)
    ref2 = compute_reference_entropy_flow(model, loader, layers=["1"], progress=False)
    assert ref1 == pytest.approx(ref2, rel=1e-6)  # eval mode: dropout off, order irrelevant

    model.eval()
    compute_reference_entropy_flow(model, loader, layers=["1"], progress=False)
    assert not model.training


def test_reference_restores_mode_on_error_and_rejects_empty_loader() -> None:
    model = _mlp().train()

    def bad_loader():
        yield torch.randn(2, 6)
        raise RuntimeError("loader broke")

    with pytest.raises(RuntimeError, match="loader broke"):
        compute_reference_entropy_flow(model, bad_loader(), layers=["1"], progress=False)
    assert model.training and _no_hooks(model)
    with pytest.raises(ValueError, match=r"loader: expected at least one sample, got none"):
        compute_reference_entropy_flow(model, [], layers=["1"], progress=False)
    with pytest.raises(UnknownLayerError):
        compute_reference_entropy_flow(model, [], layers=["9"], progress=False)


# ------------------------------------------------------------------ end to end


def test_entropic_retraining_increases_entropy_flow() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4))
    x, y = torch.randn(64, 6), torch.randint(0, 4, (64,))
    layers = ["1"]
    ref = compute_reference_entropy_flow(model, [(x, y)], layers=layers, progress=False)
    assert ref > 0  # precondition for "sigma > 1 increases E_T" (spec §4.3)
    loss_fn = EntropicLoss(reference=ref, lam=10.0, sigma=1.65)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    with EntropyProbe(model, layers) as probe:
        for _ in range(30):
            logits, hs = probe.run(x)
            loss = loss_fn(logits, y, hs)
            opt.zero_grad()
            loss.backward()
            opt.step()
    after = compute_reference_entropy_flow(model, [(x, y)], layers=layers, progress=False)
    assert after > ref
    assert abs(after - 1.65 * ref) < abs(ref - 1.65 * ref)  # moved towards the target
    assert _no_hooks(model)
