"""Tests of ib_plugins.wrap: wrap_model / IBModel on real and tiny models, records, errors, hygiene."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _models import (
    ConvNet,
    DigitsLikeNet,
    NoPresetNet,
    RaisingNet,
    ReusedModuleNet,
    TinyResNet,
    UnusedModuleNet,
    count_hooks,
    mlp,
)

from ib_plugins import (
    ChannelMask,
    HSICBottleneck,
    IBModel,
    LayerNotFiredError,
    NonFiniteActivationError,
    NoTrainingForwardError,
    UnknownLayerError,
    capture_activations,
    nhsic,
    wrap_model,
)
from ib_plugins.presets import get_preset

# wrap_model's own hooks besides the layers': a forward pre-hook and a forward hook on the network
# itself (they record training forwards that call the network directly, e.g. ART's AWP/OAAT)
OWN = 2


def _batch(n: int = 8, shape=(1, 8, 8), num_classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g), torch.arange(n) % num_classes


# --------------------------------------------------------------------------------------------
# works unchanged on real models
# --------------------------------------------------------------------------------------------


def _check_unchanged_outputs(net: nn.Module, spec, x: torch.Tensor, **kwargs) -> IBModel:
    """Wrapped vs unwrapped logits: equal in eval (same model) and in train (on a copy, BN-safe)."""
    reference = copy.deepcopy(net)
    ib_model = wrap_model(net, spec, **kwargs)
    ib_model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(ib_model(x), reference(x))
    assert torch.equal(ib_model(x), reference(x))  # eval with grad enabled
    ib_model.train(), reference.train()
    out_w, out_r = ib_model(x), reference(x)
    assert torch.equal(out_w, out_r)
    assert ib_model.num_records == 1
    # BN running statistics evolved identically
    for (k, a), (_, b) in zip(ib_model.model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    return ib_model


def test_torchvision_resnet18_with_all_preset():
    tv_models = pytest.importorskip("torchvision.models", reason="torchvision is not installed")
    net = tv_models.resnet18(num_classes=10)
    x, y = _batch(4, (3, 32, 32))
    ib_model = _check_unchanged_outputs(net, "all", x)
    assert ib_model.layers == get_preset("torchvision-resnet18").layers
    out = ib_model(x)
    terms = ib_model.ib_terms(x, y, output=out)
    assert terms.hx.shape == (len(ib_model.layers),) and torch.isfinite(terms.loss)
    (F.cross_entropy(out, y) + terms.loss).backward()
    assert net.conv1.weight.grad is not None
    assert ib_model.unwrap() is net and count_hooks(net) == 0


def test_sequential_model():
    net = mlp()
    x, y = _batch()
    ib_model = _check_unchanged_outputs(net, ["2", "4"], x, num_classes=10)
    loss = ib_model.ib_loss(x, y)
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_timm_model_if_installed():
    timm = pytest.importorskip("timm", reason="timm is not installed")
    net = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    from ib_plugins import list_layer_names

    names = list_layer_names(net)
    layers = [n for n in ("layer2", "layer4", "global_pool") if n in names]
    assert len(layers) >= 2, names
    x, y = _batch(4, (3, 32, 32))
    ib_model = _check_unchanged_outputs(net, layers, x, num_classes=10)
    out = ib_model(x)
    loss = ib_model.ib_loss(x, y, output=out)
    assert torch.isfinite(loss)
    loss.backward()
    assert ib_model.unwrap() is net and count_hooks(net) == 0


def test_model_reusing_one_module():
    net = ReusedModuleNet()
    x = torch.rand(6, 16)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    ib_model = _check_unchanged_outputs(net, ["act"], x, num_classes=4)
    assert list(ib_model.activations) == ["act", "act#1"]
    terms = ib_model.ib_terms(x, y)
    assert terms.hx.shape == (2,) and terms.hy.shape == (2,)


def test_tiny_resnet_nested_layers():
    net = TinyResNet()
    x = torch.rand(6, 3, 8, 8)
    ib_model = _check_unchanged_outputs(net, ["layer1.0.bn2", "layer2.0", "pool"], x, num_classes=10)
    # the recorded bn2 output is the value before the in-place residual (it has negatives)
    assert bool((ib_model.activations["layer1.0.bn2"] < 0).any())


# --------------------------------------------------------------------------------------------
# the loss itself
# --------------------------------------------------------------------------------------------


def test_ib_loss_equals_the_formula_from_nhsic():
    net = mlp()
    ib_model = wrap_model(net, ["2", "4"], alpha=0.01, beta=0.1, num_classes=10).train()
    x, y = _batch(12)
    ib_model(x)
    acts = dict(ib_model.activations)
    loss = ib_model.ib_loss(x, y)
    y1h = F.one_hot(y, 10).float()
    expected = sum(0.01 * nhsic(acts[n], x) - 0.1 * nhsic(acts[n], y1h, kernel_b="linear") for n in ("2", "4"))
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-4, abs=1e-5)


def test_ib_loss_matches_manual_capture_and_bottleneck():
    net = mlp()
    x, y = _batch(10)
    net.train()
    with capture_activations(net, ["2", "4"]) as cap:
        net(x)
    expected = HSICBottleneck(num_classes=10)(list(cap.activations.values()), x, y).loss
    ib_model = wrap_model(net, ["2", "4"], num_classes=10).train()
    ib_model(x)
    assert torch.allclose(ib_model.ib_loss(x, y), expected, rtol=1e-6, atol=1e-7)


def test_ib_loss_gradient_reaches_hooked_layers_only():
    net = mlp()
    ib_model = wrap_model(net, ["2", "4"], num_classes=10).train()
    x, y = _batch()
    ib_model(x)
    loss = ib_model.ib_loss(x, y)
    params = {"1": net[1].weight, "3": net[3].weight, "5": net[5].weight, "5.bias": net[5].bias}
    grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()), allow_unused=True), strict=True))
    assert grads["1"] is not None and float(grads["1"].abs().sum()) > 0
    assert grads["3"] is not None and float(grads["3"].abs().sum()) > 0
    assert grads["5"] is None and grads["5.bias"] is None  # after the last hooked layer


def test_num_classes_inferred_from_logits():
    ib_model = wrap_model(mlp(num_classes=7), ["2"]).train()
    x, y = _batch(14, num_classes=7)
    ib_model(x)
    explicit = wrap_model(copy.deepcopy(ib_model.model), ["2"], num_classes=7).train()
    explicit(x)
    assert torch.allclose(ib_model.ib_loss(x, y), explicit.ib_loss(x, y))


def test_x_none_uses_the_forwards_own_input():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch()
    out = ib_model(x)
    a = ib_model.ib_loss(None, y, output=out)
    ib_model(x)
    b = ib_model.ib_loss(x, y)
    assert torch.allclose(a, b)


def test_ib_loss_consumes_the_record():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch()
    ib_model(x)
    ib_model.ib_loss(x, y)
    with pytest.raises(NoTrainingForwardError, match="none was recorded since the last ib_loss call"):
        ib_model.ib_loss(x, y)


def test_output_identity_picks_the_right_record_trades_case():
    net = mlp()
    ib_model = wrap_model(net, ["2", "4"], num_classes=10).train()
    x_clean, y = _batch(8, seed=1)
    x_adv = (x_clean + 0.1 * torch.rand(x_clean.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    clean_logits = ib_model(x_clean)
    adv_logits = ib_model(x_adv)
    assert ib_model.num_records == 2
    loss_clean = ib_model.ib_loss(x_clean, y, output=clean_logits)
    loss_adv = ib_model.ib_loss(x_clean, y, output=adv_logits)  # authors: clean X, adversarial T
    assert ib_model.num_records == 0
    ib_model(x_clean)
    fresh_clean = ib_model.ib_loss(x_clean, y)
    ib_model(x_adv)
    fresh_adv = ib_model.ib_loss(x_clean, y)
    assert torch.allclose(loss_clean, fresh_clean, rtol=1e-6, atol=1e-7)
    assert torch.allclose(loss_adv, fresh_adv, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(loss_clean, loss_adv)


def test_default_record_is_the_latest_forward():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x1, y = _batch(8, seed=3)
    x2, _ = _batch(8, seed=4)
    ib_model(x1)
    ib_model(x2)
    latest = ib_model.ib_loss(x2, y)
    ib_model.clear_records()
    ib_model(x2)
    assert torch.allclose(latest, ib_model.ib_loss(x2, y))


def test_output_of_eval_or_consumed_forward_raises():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10)
    x, y = _batch()
    train_out = ib_model.train()(x)
    eval_out = ib_model.eval()(x)
    with pytest.raises(NoTrainingForwardError, match="no remembered training-mode forward produced this output"):
        ib_model.ib_loss(x, y, output=eval_out)
    ib_model.ib_loss(x, y, output=train_out)
    with pytest.raises(NoTrainingForwardError, match="already consumed"):
        ib_model.ib_loss(x, y, output=train_out)


def test_capturing_false_records_nothing():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, _ = _batch()
    with ib_model.capturing(False):
        ib_model(x)
    assert ib_model.num_records == 0
    ib_model(x)
    assert ib_model.num_records == 1


def test_inference_modes_pauses_recording_and_restores_each_modules_flag_even_on_error():
    from ib_plugins._context import _inference_modes

    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    outer = nn.Sequential(ib_model).train()
    ib_model.model[1].eval()  # a mixed state must come back as it was, module by module
    before = [m.training for m in outer.modules()]
    x, _ = _batch()
    with pytest.raises(RuntimeError, match="boom"), _inference_modes(outer):
        outer.train()  # as an attack configured to run in train mode would
        outer(x)  # a training forward, but recording is paused inside the nested IBModel
        assert ib_model.num_records == 0
        raise RuntimeError("boom")
    assert [m.training for m in outer.modules()] == before
    with _inference_modes(outer):
        assert not any(m.training for m in outer.modules())
    assert [m.training for m in outer.modules()] == before
    outer(x)
    assert ib_model.num_records == 1  # recording is back on


def test_float64_model():
    ib_model = wrap_model(mlp(), ["2", "4"], num_classes=10).to(torch.float64).train()
    x, y = _batch()
    x = x.double()
    out = ib_model(x)
    assert out.dtype == torch.float64
    loss = ib_model.ib_loss(x, y)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    loss.backward()
    assert ib_model.model[1].weight.grad.dtype == torch.float64


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def test_ib_loss_before_any_training_forward_raises():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10)
    x, y = _batch()
    with pytest.raises(NoTrainingForwardError, match="training-mode forward"):
        ib_model.ib_loss(x, y)


def test_ib_loss_after_eval_forward_raises():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10)
    x, y = _batch()
    ib_model.eval()(x)
    with pytest.raises(NoTrainingForwardError, match="model.train()"):
        ib_model.ib_loss(x, y)
    ib_model.train()
    with torch.no_grad():
        ib_model(x)
    with pytest.raises(NoTrainingForwardError):
        ib_model.ib_loss(x, y)
    ib_model(x)
    ib_model.ib_loss(x, y)
    ib_model.eval()(x)
    with pytest.raises(NoTrainingForwardError):
        ib_model.ib_loss(x, y)


def test_batch_size_mismatch_raises_naming_x_or_y():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(8)
    ib_model(x)
    with pytest.raises(ValueError, match=r"x has batch size 6, but the recorded forward had 8"):
        ib_model.ib_loss(x[:6], y)
    ib_model(x)
    with pytest.raises(ValueError, match=r"y has batch size 5, but the recorded forward had 8"):
        ib_model.ib_loss(x, y[:5])


def test_rejected_ib_loss_call_keeps_the_forward_for_the_corrected_call():
    """Issue 11, item 1: validate first, consume after."""
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(8)
    out = ib_model(x)
    with pytest.raises(ValueError, match=r"y has batch size 5, but the recorded forward had 8"):
        ib_model.ib_loss(x, y[:5])
    assert ib_model.num_records == 1
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, num_classes\)"):
        ib_model.ib_loss(x, y + 10, output=out)
    with pytest.raises(TypeError, match=r"y: expected integer class indices .*, got dtype torch.bool"):
        ib_model.ib_loss(x, y.bool(), output=out)
    assert ib_model.num_records == 1
    loss = ib_model.ib_loss(x, y, output=out)  # the corrected call finds the forward
    assert torch.isfinite(loss) and ib_model.num_records == 0


def test_bool_labels_are_rejected_as_by_evaluate_suite():
    """Issue 11, item 3: the same labels are refused by ib_loss and by the evaluators."""
    from ib_plugins.evaluation import AttackSpec, evaluate_suite

    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(8)
    ib_model(x)
    y_bool = (y % 2).bool()
    with pytest.raises(TypeError, match=r"y: expected integer class indices .*got dtype torch.bool"):
        ib_model.ib_loss(x, y_bool)
    with pytest.raises(TypeError, match=r"y: expected an integer tensor of class indices, got dtype torch.bool"):
        evaluate_suite(mlp(), x, y_bool, [AttackSpec("fgsm", "linf", 0.0, {})], progress=False)


@pytest.mark.parametrize("convert", [lambda t: t.tolist(), lambda t: t.detach().numpy()], ids=["list", "ndarray"])
@pytest.mark.parametrize("arg", ["x", "y", "output"])
def test_lists_and_arrays_get_a_type_error_naming_the_argument(arg, convert):
    """Issue 11, item 3: a TypeError naming the argument, not an AttributeError from inside."""
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(8)
    out = ib_model(x)
    args = {"x": x, "y": y, "output": out}
    args[arg] = convert(args[arg])
    kind = "list" if isinstance(args[arg], list) else "ndarray"
    with pytest.raises(TypeError, match=rf"^{arg}: expected .*got (a )?{kind}"):
        ib_model.ib_loss(args["x"], args["y"], output=args["output"])
    assert torch.isfinite(ib_model.ib_loss(x, y, output=out))  # and the forward is still there


def test_inputs_on_another_device_are_named():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(8)
    out = ib_model(x)
    with pytest.raises(ValueError, match=r"x: expected a tensor on the device of the recorded .* \(cpu\), got meta"):
        ib_model.ib_loss(torch.empty_like(x, device="meta"), y, output=out)
    with pytest.raises(ValueError, match=r"y: expected a tensor on the device of the recorded .* \(cpu\), got meta"):
        ib_model.ib_loss(x, torch.empty_like(y, device="meta"), output=out)


def test_integer_inputs_are_fine_when_alpha_is_zero():
    """X enters only through alpha * nHSIC(T, X): integer X (e.g. token ids) is refused only when used."""
    net = nn.Sequential(nn.Embedding(20, 6), nn.Flatten(), nn.Linear(18, 10), nn.ReLU(), nn.Linear(10, 3))
    tokens = torch.randint(0, 20, (8, 3), generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % 3
    ib_model = wrap_model(net, ["3"], alpha=0.0, num_classes=3).train()
    out = ib_model(tokens)
    assert torch.isfinite(ib_model.ib_loss(None, y, output=out))
    used = wrap_model(ib_model.unwrap(), ["3"], num_classes=3).train()  # alpha = 0.008 uses X
    out = used(tokens)
    with pytest.raises(TypeError, match=r"x: the recorded forward's input has dtype torch.int64"):
        used.ib_loss(None, y, output=out)


@pytest.mark.parametrize("bad", [10, -1])
def test_labels_outside_num_classes_raise(bad):
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(8)
    y = y.clone()
    y[3] = bad
    ib_model(x)
    with pytest.raises(ValueError, match="num_classes"):
        ib_model.ib_loss(x, y)


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_negative_weights_raise_naming_the_argument(name):
    with pytest.raises(ValueError, match=rf"{name}: expected a finite number >= 0, got -0.1"):
        wrap_model(mlp(), ["2"], **{name: -0.1})


def test_negative_weight_registers_no_hooks():
    net = mlp()
    with pytest.raises(ValueError):
        wrap_model(net, ["2"], alpha=-1.0)
    assert count_hooks(net) == 0


def test_layer_that_never_fires_raises_naming_it():
    ib_model = wrap_model(UnusedModuleNet(), ["act", "unused"], num_classes=4).train()
    x = torch.rand(6, 16)
    ib_model(x)
    with pytest.raises(LayerNotFiredError, match=r"'unused' did not run") as info:
        ib_model.ib_loss(x, torch.arange(6) % 4)
    assert "'act'" not in str(info.value)


def test_non_finite_activation_raises_naming_the_layer():
    ib_model = wrap_model(mlp(), ["2", "4"], num_classes=10).train()
    x, y = _batch()
    x[2, 0, 3, 3] = float("nan")
    ib_model(x)
    with pytest.raises(NonFiniteActivationError, match=r"layer '2' produced non-finite values"):
        ib_model.ib_loss(x, y)


def test_non_finite_only_in_a_later_layer_is_named():
    net = mlp()
    with torch.no_grad():
        net[3].bias[0] = float("inf")
    ib_model = wrap_model(net, ["2", "4"], num_classes=10).train()
    x, y = _batch()
    ib_model(x)
    with pytest.raises(NonFiniteActivationError, match=r"layer '4'"):
        ib_model.ib_loss(x, y)


def test_check_finite_false_does_not_raise():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10, check_finite=False).train()
    x, y = _batch()
    x[0, 0, 0, 0] = float("nan")
    ib_model(x)
    assert not torch.isfinite(ib_model.ib_loss(x, y))


def test_batch_of_one_raises():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch(1)
    ib_model(x)
    with pytest.raises(ValueError, match="at least 2"):
        ib_model.ib_loss(x, y)


def test_one_hot_float_labels_equal_index_labels():
    ib_model = wrap_model(mlp(), ["2", "4"], num_classes=10).train()
    x, y = _batch(10)
    ib_model(x)
    by_index = ib_model.ib_loss(x, y)
    ib_model(x)
    by_one_hot = ib_model.ib_loss(x, F.one_hot(y, 10).float())
    assert torch.allclose(by_index, by_one_hot)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"y_kernel": "rbf"}, "y_kernel"), ({"sigma": 0.0}, "sigma"), ({"eps": -1e-5}, "eps"),
     ({"num_classes": 1}, "num_classes")],
)
def test_bad_bottleneck_options_raise_naming_the_argument(kwargs, match):
    net = mlp()
    with pytest.raises(ValueError, match=match):
        wrap_model(net, ["2"], **kwargs)
    assert count_hooks(net) == 0


def test_unknown_mask_layer_registers_nothing():
    net = ConvNet()
    with pytest.raises(UnknownLayerError, match="featurez"):
        wrap_model(net, ["features"], mask_layer="featurez", num_classes=4)
    assert count_hooks(net) == 0


def test_mask_already_attached_elsewhere_registers_nothing_new():
    first, second = ConvNet(), ConvNet()
    mask = ChannelMask(num_classes=4)
    wrap_model(first, ["features"], mask=mask, mask_layer="features")
    with pytest.raises(RuntimeError, match="already attached"):
        wrap_model(second, ["features"], mask=mask, mask_layer="features")
    assert count_hooks(second) == 0 and count_hooks(first) == 2 + OWN


def test_ib_loss_under_bfloat16_autocast():
    ib_model = wrap_model(mlp(), ["2", "4"], num_classes=10).train()
    x, y = _batch(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ib_model(x)
        loss = ib_model.ib_loss(x, y, output=out)
    assert ib_model.num_records == 0
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(ib_model.model[1].weight.grad).all()


def test_preset_name_as_ib_layers():
    net = DigitsLikeNet()
    ib_model = wrap_model(net, "digits-cnn:robust", num_classes=10)
    assert ib_model.layers == ("conv3", "fc1")
    assert wrap_model(copy.deepcopy(net), "digits-cnn").layers == ("conv1", "conv2", "conv3", "fc1")
    assert wrap_model(copy.deepcopy(net), "robust").layers == ("conv3", "fc1")
    assert wrap_model(copy.deepcopy(net), 2).layers == ("conv3", "fc1")
    x, y = _batch(8, (1, 8, 8))
    ib_model.train()(x)
    assert torch.isfinite(ib_model.ib_loss(x, y))


def test_unknown_layer_raises_and_registers_nothing():
    net = TinyResNet()
    with pytest.raises(UnknownLayerError, match=r"'layer1\.0\.bn3' is not a submodule of TinyResNet"):
        wrap_model(net, ["layer1.0.bn2", "layer1.0.bn3"])
    assert count_hooks(net) == 0


def test_wrapping_an_ibmodel_raises_type_error():
    ib_model = wrap_model(mlp(), ["2"])
    with pytest.raises(TypeError, match="already an IBModel"):
        wrap_model(ib_model, ["model.2"])
    with pytest.raises(TypeError, match="already an IBModel"):
        IBModel(ib_model, layers=["model.2"], bottleneck=HSICBottleneck())


def test_wrapping_a_non_module_raises_type_error():
    with pytest.raises(TypeError, match=r"model: expected a torch.nn.Module, got function"):
        wrap_model(lambda x: x, ["0"])


def test_mask_without_num_classes_raises():
    net = ConvNet()
    with pytest.raises(ValueError, match="num_classes"):
        wrap_model(net, ["features"], mask_layer="features")
    with pytest.raises(ValueError, match="num_classes"):
        wrap_model(net, ["features"], mask=ChannelMask(), mask_layer="features")
    assert count_hooks(net) == 0


def test_mask_without_layer_on_model_without_preset_raises():
    with pytest.raises(ValueError, match="mask_layer"):
        wrap_model(NoPresetNet(), ["fc"], mask="paper", num_classes=2)


def test_bad_mask_argument_raises():
    with pytest.raises(ValueError, match=r"mask: expected None, 'paper', 'code' or a ChannelMask, got 'both'"):
        wrap_model(ConvNet(), ["features"], mask="both", mask_layer="features", num_classes=4)


def test_ib_loss_after_unwrap_raises():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10).train()
    x, y = _batch()
    ib_model(x)
    ib_model.unwrap()
    with pytest.raises(RuntimeError, match="unwrapped"):
        ib_model.ib_loss(x, y)


# --------------------------------------------------------------------------------------------
# state_dict, save/load, deepcopy, dtype
# --------------------------------------------------------------------------------------------


def test_state_dict_keys_are_prefixed_original_keys():
    net = TinyResNet()
    original = list(net.state_dict())
    ib_model = wrap_model(net, ["layer1.0", "pool"], num_classes=10)
    assert list(ib_model.state_dict()) == [f"model.{k}" for k in original]


def test_state_dict_keys_with_mask_add_only_extra_state():
    net = ConvNet()
    original = list(net.state_dict())
    ib_model = wrap_model(net, ["features", "pool"], mask_layer="features", num_classes=4)
    keys = list(ib_model.state_dict())
    assert keys[: len(original)] == [f"model.{k}" for k in original]
    assert set(keys) - {f"model.{k}" for k in original} <= {"mask._extra_state"}


def test_wrapping_does_not_change_the_models_state_dict():
    net = TinyResNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wrap_model(net, ["layer1.0", "fc"], num_classes=10)
    after = net.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_save_and_load_state_dict_round_trip():
    x, y = _batch(6, (3, 8, 8))
    source = wrap_model(TinyResNet(), ["layer1.0", "pool"], num_classes=10)
    source.train()(x)  # move the BN statistics
    source.clear_records()
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    buf.seek(0)
    target = wrap_model(TinyResNet(), ["layer1.0", "pool"], num_classes=10)
    result = target.load_state_dict(torch.load(buf))
    assert not result.missing_keys and not result.unexpected_keys
    source.eval(), target.eval()
    assert torch.equal(source(x), target(x))
    # the plain model loads the inner state dict too
    plain = TinyResNet().eval()
    plain.load_state_dict({k.removeprefix("model."): v for k, v in source.state_dict().items()})
    assert torch.equal(plain(x), source(x))


def test_torch_save_whole_ibmodel_round_trip():
    source = wrap_model(ConvNet(), ["features", "pool"], mask_layer="features", num_classes=4)
    buf = io.BytesIO()
    torch.save(source, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    assert count_hooks(loaded.model) == 3 + OWN and loaded.mask.is_attached
    x, y = torch.rand(8, 3, 4, 4), torch.arange(8) % 4
    source.eval(), loaded.eval()
    assert torch.equal(source(x), loaded(x))
    loaded.train()(x)
    assert torch.isfinite(loaded.ib_loss(x, y))
    loaded.unwrap()
    assert count_hooks(loaded.model) == 0 and count_hooks(source.model) == 3 + OWN


def test_deepcopy_records_into_its_own_store_and_owns_its_hooks():
    original = wrap_model(mlp(), ["2", "4"], num_classes=10).train()
    x, y = _batch()
    original(x)  # a pending record with an autograd graph must not break deepcopy
    clone = copy.deepcopy(original)
    assert clone.num_records == 0 and original.num_records == 1
    assert clone.model is not original.model
    assert count_hooks(clone.model) == count_hooks(original.model) == 2 + OWN
    clone(x)
    assert clone.num_records == 1 and original.num_records == 1
    clone_loss = clone.ib_loss(x, y)
    assert original.num_records == 1
    assert torch.allclose(clone_loss, original.ib_loss(x, y))
    clone.remove_hooks()
    assert count_hooks(clone.model) == 0
    assert count_hooks(original.model) == 2 + OWN
    original(x)
    assert original.num_records == 1
    assert torch.isfinite(original.ib_loss(x, y))


def test_deepcopy_with_mask():
    original = wrap_model(ConvNet(), ["features"], mask_layer="features", num_classes=4)
    clone = copy.deepcopy(original)
    assert clone.mask is not original.mask
    assert count_hooks(clone.model) == count_hooks(original.model) == 2 + OWN
    clone.unwrap()
    assert count_hooks(clone.model) == 0 and count_hooks(original.model) == 2 + OWN
    assert original.mask.is_attached


# --------------------------------------------------------------------------------------------
# hook hygiene
# --------------------------------------------------------------------------------------------


def test_unwrap_leaves_zero_hooks_and_returns_the_model():
    net = TinyResNet()
    ib_model = wrap_model(net, ["stem", "layer1.0.bn2", "layer2.0", "fc"], num_classes=10)
    assert count_hooks(net) == 4 + OWN
    assert ib_model.has_hooks
    assert ib_model.unwrap() is net
    assert count_hooks(net) == 0 and not ib_model.has_hooks
    ib_model.unwrap()  # idempotent
    ib_model.remove_hooks()
    assert count_hooks(net) == 0


def test_unwrap_with_mask_leaves_zero_hooks():
    net = ConvNet()
    ib_model = wrap_model(net, ["features", "pool"], mask_layer="features", num_classes=4)
    assert count_hooks(net) == 3 + OWN
    ib_model.unwrap()
    assert count_hooks(net) == 0


def test_exception_during_forward_leaks_nothing_and_model_recovers():
    net = RaisingNet()
    ib_model = wrap_model(net, ["act", "head"], num_classes=4).train()
    hooks_before = count_hooks(net)
    x = torch.rand(6, 16)
    y = torch.arange(6) % 4
    net.boom.armed = True
    with pytest.raises(RuntimeError, match="raises on purpose"):
        ib_model(x)
    assert count_hooks(net) == hooks_before
    assert ib_model.num_records == 0
    with pytest.raises(NoTrainingForwardError):
        ib_model.ib_loss(x, y)
    net.boom.armed = False
    ib_model(x)
    assert torch.isfinite(ib_model.ib_loss(x, y))
    ib_model.unwrap()
    assert count_hooks(net) == 0


def test_exception_in_forward_with_mask_leaks_nothing():
    net = RaisingNet()
    mask = ChannelMask(every=1, skip_first=False, drop_frac=0.25)
    ib_model = wrap_model(net, ["act"], mask=mask, mask_layer="act", num_classes=4).train()
    net.boom.armed = True
    x = torch.rand(6, 16)
    with pytest.raises(RuntimeError, match="raises on purpose"):
        with ib_model.labels(torch.arange(6) % 4):
            ib_model(x)
    assert mask._input is None and mask._labels is None
    ib_model.unwrap()
    assert count_hooks(net) == 0


def test_thousand_wrap_unwrap_cycles_leave_no_hooks():
    net = TinyResNet()
    layers = ["stem", "layer1.0.bn2", "layer2.0", "fc"]
    for _ in range(1000):
        wrap_model(net, layers, num_classes=10).unwrap()
    assert count_hooks(net) == 0
    ib_model = wrap_model(net, layers, num_classes=10)
    assert count_hooks(net) == len(layers) + OWN
    ib_model.unwrap()
    assert count_hooks(net) == 0


def test_eval_forward_records_nothing():
    ib_model = wrap_model(mlp(), ["2"], num_classes=10)
    x, _ = _batch()
    ib_model.eval()(x)
    with torch.no_grad():
        ib_model.train()(x)
    assert ib_model.num_records == 0 and dict(ib_model.activations) == {}


def test_max_records_bounds_memory():
    ib_model = IBModel(mlp(), layers=["2"], bottleneck=HSICBottleneck(num_classes=10), max_records=2).train()
    x, _ = _batch()
    for _ in range(5):
        ib_model(x)
    assert ib_model.num_records == 2
    with pytest.raises(ValueError, match="max_records"):
        IBModel(mlp(), layers=["2"], bottleneck=HSICBottleneck(), max_records=0)


def test_ib_config_is_plain_data():
    ib_model = wrap_model(ConvNet(), ["features", "pool"], mask="code", mask_layer="features", num_classes=4)
    cfg = ib_model.ib_config()
    assert cfg["layers"] == ["features", "pool"]
    assert cfg["alpha"] == 0.008 and cfg["beta"] == 0.08 and cfg["num_classes"] == 4
    assert cfg["mask"]["mode"] == "code" and cfg["mask"]["layer"] == "features"


# --------------------------------------------------------------------------------------------
# direct calls of the network (ART's AWP/OAAT call classifier.model(x), the network)
# --------------------------------------------------------------------------------------------
def test_a_direct_training_call_of_the_network_is_recorded_like_one_through_the_wrapper():
    torch.manual_seed(0)
    ib = wrap_model(mlp(), ["2", "4"], num_classes=10).train()
    x, y = _batch()
    out_direct = ib.model(x)  # the network itself, not IBModel.forward
    assert ib.num_records == 1 and ib.find_record(out_direct) is not None
    direct = ib.ib_loss(x, y, output=out_direct)
    out_wrapped = ib(x)
    assert ib.num_records == 1  # one record per forward: the network's hooks stand aside inside forward()
    assert torch.allclose(direct, ib.ib_loss(x, y, output=out_wrapped))


def test_the_networks_training_flag_decides_and_eval_or_no_grad_calls_are_not_recorded():
    ib = wrap_model(mlp(), ["2"], num_classes=10)
    x, _ = _batch()
    ib.eval()
    ib.model.train()  # as ART's trainers do: classifier.model.train(mode=True) on the network only
    ib(x)
    assert ib.num_records == 1
    ib.model.eval()
    ib(x), ib.model(x)
    with torch.no_grad():
        ib.model.train()(x)
    assert ib.num_records == 1


def test_a_direct_call_that_raises_leaves_nothing_half_done():
    net = RaisingNet()
    ib = wrap_model(net, ["act"], num_classes=4).train()
    x = torch.randn(6, 16)
    net.boom.armed = True
    with pytest.raises(RuntimeError):
        net(x)
    assert ib.num_records == 0 and not ib._direct_calls and not ib._capture.enabled
    net.boom.armed = False
    out = net(x)
    assert ib.num_records == 1 and torch.isfinite(ib.ib_loss(x, torch.arange(6) % 4, output=out))


def test_a_direct_call_with_a_mask_masks_on_schedule():
    torch.manual_seed(0)
    mask = ChannelMask(every=1, skip_first=False, num_classes=4, k_low_y=2, k_high_x=2)
    ib = wrap_model(ConvNet(), ["features"], mask_layer="features", mask=mask, num_classes=4).train()
    x, y = torch.rand(8, 3, 8, 8), torch.arange(8) % 4
    with ib.labels(y) as active:
        out = ib.model(x)
    assert active and ib.num_records == 1 and ib.mask._input is None
    assert torch.isfinite(ib.ib_loss(x, y, output=out))
