"""Tests of the model zoo (ib_plugins.models): shapes, preset layer names, logits, errors."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
import torch
import torch.nn as nn

from ib_plugins.models import (
    MODELS,
    VGG16,
    DigitsCNN,
    KerasCIFARCNN,
    KerasMNISTCNN,
    LeNet5,
    Normalize,
    ResNet18,
    VGGMini,
    WideResNet,
    create_model,
    list_models,
)
from ib_plugins.presets import get_preset, list_presets, preset_for_model

# (registry name, constructor kwargs, input shape) -- small WRN so the suite stays fast.
CASES = [
    ("vgg16", {}, (2, 3, 32, 32)),
    ("resnet18", {}, (2, 3, 32, 32)),
    ("wrn28-10", {"widen_factor": 1}, (2, 3, 32, 32)),
    ("lenet5", {}, (2, 1, 28, 28)),
    ("keras-mnist-cnn", {}, (2, 1, 28, 28)),
    ("keras-cifar-cnn", {}, (2, 3, 32, 32)),
    ("digits-cnn", {}, (2, 1, 8, 8)),
]
CASE_IDS = [c[0] for c in CASES]


def _build(name: str, kwargs: dict, shape: tuple[int, ...], num_classes: int = 7) -> nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=num_classes, in_channels=shape[1], **kwargs)


def _hook_shapes(model: nn.Module, layers: Iterable[str], x: torch.Tensor) -> dict[str, tuple]:
    """Output shape (without the batch dim) of each named layer in one eval forward."""
    return {name: tuple(out.shape[1:]) for name, out in _hook_outputs(model, layers, x).items()}


def _hook_outputs(
    model: nn.Module, layers: Iterable[str], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    outs: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: outs.__setitem__(n, out.detach().clone())
        )
        for n in layers
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return outs


# ----------------------------------------------------------------------------- shapes and presets


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=CASE_IDS)
def test_output_shape_train_and_eval(name, kwargs, shape):
    model = _build(name, kwargs, shape)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    out_train = model.train()(x)
    assert out_train.shape == (shape[0], 7)
    assert out_train.requires_grad
    with torch.no_grad():
        assert model.eval()(x).shape == (shape[0], 7)


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=CASE_IDS)
def test_preset_layers_exist_and_fire(name, kwargs, shape):
    model = _build(name, kwargs, shape)
    assert model.ib_preset == name
    preset = get_preset(name)
    assert preset_for_model(model) is preset
    for layer in preset.layers:
        model.get_submodule(layer)  # raises AttributeError when missing
    if preset.mask_layer is not None:
        model.get_submodule(preset.mask_layer)
    shapes = _hook_shapes(model, preset.layers, torch.rand(*shape))
    assert set(shapes) == set(preset.layers)


def test_registry_names_match_presets_and_classes():
    assert list_models() == sorted(MODELS)
    assert set(list_models()) <= set(list_presets())
    # Each class under its preset's name; VGG16 also under torchvision's "vgg16-bn" (its preset equals
    # "vgg16"); VGGMini is the CPU-sized VGG of the Fashion-MNIST grid.
    names = {VGG16: ["vgg16", "vgg16-bn"], ResNet18: ["resnet18"], WideResNet: ["wrn28-10"], LeNet5: ["lenet5"],
             KerasMNISTCNN: ["keras-mnist-cnn"], KerasCIFARCNN: ["keras-cifar-cnn"], DigitsCNN: ["digits-cnn"],
             VGGMini: ["vgg-mini"]}
    expected = {name: cls for cls, aliases in names.items() for name in aliases}
    assert MODELS == expected
    for name, cls in expected.items():
        if name == "vgg16-bn":
            assert cls.ib_preset == "vgg16" and get_preset(name).layers == get_preset("vgg16").layers
            assert get_preset(name).robust_layers == get_preset("vgg16").robust_layers
        else:
            assert cls.ib_preset == name


def _preset_shapes(cls: type[nn.Module], preset: str) -> tuple[nn.Module, dict[str, tuple]]:
    """A seeded 10-class ``cls`` and the shapes of its preset's layers for a 2x3x32x32 batch."""
    torch.manual_seed(0)
    model = cls(num_classes=10)
    return model, _hook_shapes(model, get_preset(preset).layers, torch.rand(2, 3, 32, 32))


def test_vgg16_hook_shapes_match_paper():
    model, shapes = _preset_shapes(VGG16, "vgg16")
    assert shapes == {
        "block1": (64, 16, 16),
        "block2": (128, 8, 8),
        "block3": (256, 4, 4),
        "block4": (512, 2, 2),
        "block5": (512, 1, 1),
        "fc1": (4096,),
        "fc2": (4096,),
    }
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert model.classifier.in_features == 4096
    # channel plan 64x2, 128x2, 256x3, 512x3, 512x3 of Conv-BN-ReLU units, each block + MaxPool
    convs = [
        sum(isinstance(m, nn.Conv2d) for m in model.get_submodule(f"block{i}")) for i in range(1, 6)
    ]
    assert convs == [2, 2, 3, 3, 3]
    assert all(isinstance(model.get_submodule(f"block{i}")[-1], nn.MaxPool2d) for i in range(1, 6))


def test_vgg16_accepts_larger_inputs():
    torch.manual_seed(0)
    model = VGG16(num_classes=5).eval()
    shapes = _hook_shapes(model, ["block5", "fc1"], torch.rand(1, 3, 64, 64))
    assert shapes == {"block5": (512, 2, 2), "fc1": (4096,)}


def test_resnet18_hook_shapes_match_paper():
    model, shapes = _preset_shapes(ResNet18, "resnet18")
    expected = {"stem": (64, 32, 32), "pool": (512,)}
    for i, (channels, size) in enumerate(((64, 32), (128, 16), (256, 8), (512, 4)), start=1):
        expected.update({f"layer{i}.{j}": (channels, size, size) for j in (0, 1)})  # two BasicBlocks per stage
    assert shapes == expected
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    outs = _hook_outputs(model, ["stem", "layer2.1", "layer4.1"], torch.randn(2, 3, 32, 32))
    assert all(bool((t >= 0).all()) for t in outs.values()), "block outputs must be post-ReLU"


def test_wrn_28_hook_names_and_shapes():
    torch.manual_seed(0)
    model = WideResNet(depth=28, widen_factor=1, num_classes=10)
    layers = get_preset("wrn28-10").layers
    assert len(layers) == 14
    shapes = _hook_shapes(model, layers, torch.rand(2, 3, 32, 32))
    expected = {"conv1": (16, 32, 32), "pool": (64,)}
    for j in range(4):
        expected[f"layer1.{j}"] = (16, 32, 32)
        expected[f"layer2.{j}"] = (32, 16, 16)
        expected[f"layer3.{j}"] = (64, 8, 8)
    assert shapes == expected
    # block outputs are the raw residual sum (no activation): negative values occur
    outs = _hook_outputs(model, ["layer1.0", "layer3.3"], torch.rand(2, 3, 32, 32))
    assert bool((outs["layer1.0"] < 0).any())


def test_wrn_28_10_widths_without_forward():
    torch.manual_seed(0)
    model = WideResNet()  # the paper's WRN-28-10, dropout 0.3, 100 classes
    assert model.conv1.out_channels == 16
    widths = [model.get_submodule(f"layer{i}.0").conv2.out_channels for i in (1, 2, 3)]
    assert widths == [160, 320, 640]
    assert [len(model.get_submodule(f"layer{i}")) for i in (1, 2, 3)] == [4, 4, 4]
    assert model.fc.in_features == 640 and model.fc.out_features == 100
    assert model.layer1[0].dropout.p == pytest.approx(0.3)
    assert model.pool[0].momentum == pytest.approx(0.1)
    quirk = WideResNet(depth=10, widen_factor=1, bn_momentum=0.9)
    assert quirk.pool[0].momentum == pytest.approx(0.9)


def test_wrn_other_depth_has_no_preset():
    model = WideResNet(depth=10, widen_factor=1, num_classes=10)
    assert model.ib_preset is None
    assert preset_for_model(model) is None
    assert len(model.layer1) == 1


@pytest.mark.parametrize(
    ("model_cls", "shape", "expected"),
    [
        (
            LeNet5,
            (2, 1, 28, 28),
            {"conv1": (6, 28, 28), "conv2": (16, 10, 10), "fc1": (120,), "fc2": (84,)},
        ),
        (
            KerasMNISTCNN,
            (2, 1, 28, 28),
            {"conv1": (32, 26, 26), "conv2": (64, 24, 24), "fc1": (512,), "fc2": (84,)},
        ),
        (
            KerasCIFARCNN,
            (2, 3, 32, 32),
            {
                "conv1": (32, 32, 32),
                "conv2": (32, 30, 30),
                "conv3": (64, 15, 15),
                "conv4": (64, 13, 13),
                "fc1": (512,),
                "fc2": (256,),
                "fc3": (128,),
                "fc4": (128,),
                "fc5": (84,),
            },
        ),
        (
            DigitsCNN,
            (2, 1, 8, 8),
            {"conv1": (16, 8, 8), "conv2": (32, 4, 4), "conv3": (64, 2, 2), "fc1": (128,)},
        ),
    ],
    ids=["lenet5", "keras-mnist-cnn", "keras-cifar-cnn", "digits-cnn"],
)
def test_small_model_hook_shapes_and_post_activation(model_cls, shape, expected):
    torch.manual_seed(0)
    model = model_cls(num_classes=10)
    x = torch.rand(*shape)
    assert _hook_shapes(model, expected, x) == expected
    assert set(get_preset(model.ib_preset).layers) <= set(expected)
    outs = _hook_outputs(model, expected, x)
    assert all(bool((t >= 0).all()) for t in outs.values()), "hooked layers must be post-ReLU"
    assert not any(isinstance(m, (nn.Dropout, nn.Tanh)) for m in model.modules())


def test_lenet5_uses_average_pooling_and_classic_filters():
    model = LeNet5()
    assert isinstance(model.pool1, nn.AvgPool2d) and isinstance(model.pool2, nn.AvgPool2d)
    assert model.conv1[0].out_channels == 6 and model.conv2[0].out_channels == 16
    assert model.conv1[0].kernel_size == (5, 5) and model.conv2[0].kernel_size == (5, 5)


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=CASE_IDS)
def test_outputs_are_raw_logits(name, kwargs, shape):
    model = _build(name, kwargs, shape, num_classes=10).eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = model(x)
    ones = torch.ones(shape[0])
    assert not torch.allclose(out.sum(1), ones)
    assert not torch.allclose(out.exp().sum(1), ones)
    assert bool((out > 0).any())


def test_resnet18_log_softmax_head_matches_logits():
    torch.manual_seed(0)
    raw = ResNet18(num_classes=10).eval()
    logsm = ResNet18(num_classes=10, log_softmax_output=True).eval()
    logsm.load_state_dict(raw.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = logsm(x)
        expected = torch.log_softmax(raw(x), dim=1)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-5)
    assert bool((out <= 0).all())
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=CASE_IDS)
def test_eval_forward_is_deterministic(name, kwargs, shape):
    model = _build(name, kwargs, shape).eval()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        first = model(x)
        second = model(x)
    assert torch.equal(first, second)


# ----------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES, ids=CASE_IDS)
def test_normalisation_inside_model(name, kwargs, shape):
    channels = shape[1]
    mean = tuple(0.1 * (c + 1) for c in range(channels))
    std = tuple(0.2 + 0.05 * c for c in range(channels))
    plain = _build(name, kwargs, shape).eval()
    assert plain.normalize is None
    assert "normalize" not in dict(plain.named_modules())
    normed = _build(name, {**kwargs, "normalize": (mean, std)}, shape).eval()
    assert isinstance(normed.get_submodule("normalize"), Normalize)
    # the normalisation buffers are not in the state_dict: checkpoints are interchangeable
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(4))
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain((x - m) / s), atol=1e-5)


def test_normalize_layer_values_and_errors():
    norm = Normalize((0.5, 0.25), (0.5, 0.25))
    out = norm(torch.tensor([[[[1.0]], [[0.5]]]]))
    assert torch.allclose(out.flatten(), torch.tensor([1.0, 1.0]))
    assert norm.state_dict() == {}
    assert Normalize(0.5, 0.5)(torch.ones(1, 3, 2, 2, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match="std value to be > 0"):
        Normalize(0.5, 0.0)
    with pytest.raises(ValueError, match=r"1 or in_channels=3 values, got 2"):
        VGG16(normalize=((0.5, 0.5), (0.2, 0.2)))
    with pytest.raises(TypeError, match=r"normalize to be None or a pair \(mean, std\)"):
        LeNet5(normalize=0.5)
    with pytest.raises(TypeError, match="mean to be a number or a sequence of numbers"):
        LeNet5(normalize=("a", 0.5))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("depth", [4, 12, 27, 29])
def test_wrn_bad_depth(depth):
    pattern = r"\(depth - 4\) a positive multiple of 6.*got " + str(depth)
    with pytest.raises(ValueError, match=pattern):
        WideResNet(depth=depth, widen_factor=1)


def test_wrn_bad_dropout_and_momentum():
    with pytest.raises(ValueError, match=r"dropout in \[0, 1\), got 1.0"):
        WideResNet(depth=10, widen_factor=1, dropout=1.0)
    with pytest.raises(ValueError, match=r"bn_momentum in \[0, 1\], got 1.5"):
        WideResNet(depth=10, widen_factor=1, bn_momentum=1.5)
    with pytest.raises(TypeError, match="expected depth to be an int"):
        WideResNet(depth=28.0)


@pytest.mark.parametrize(
    ("model_cls", "bad_shape", "pattern"),
    [
        (LeNet5, (2, 1, 32, 32), r"LeNet5 expected input of shape \[B, 1, 28, 28\]"),
        (LeNet5, (2, 1, 8, 8), r"LeNet5 expected input of shape \[B, 1, 28, 28\].*empty feature"),
        (KerasMNISTCNN, (2, 1, 32, 32), r"KerasMNISTCNN expected input of shape \[B, 1, 28, 28\]"),
        (KerasCIFARCNN, (2, 3, 28, 28), r"KerasCIFARCNN expected input of shape \[B, 3, 32, 32\]"),
        (DigitsCNN, (2, 1, 28, 28), r"DigitsCNN expected input of shape \[B, 1, 8, 8\]"),
    ],
    ids=["lenet5-big", "lenet5-tiny", "keras-mnist", "keras-cifar", "digits"],
)
def test_fixed_size_models_reject_wrong_input_size(model_cls, bad_shape, pattern):
    model = model_cls().eval()
    with pytest.raises(ValueError, match=pattern), torch.no_grad():
        model(torch.rand(*bad_shape))


def test_vgg16_rejects_too_small_input():
    with pytest.raises(ValueError, match=r"VGG16 expected input of at least \[B, 3, 32, 32\]"):
        with torch.no_grad():
            VGG16().eval()(torch.rand(1, 3, 16, 16))


@pytest.mark.parametrize(
    ("model", "bad"),
    [
        (lambda: ResNet18(), torch.rand(2, 1, 32, 32)),
        (lambda: LeNet5(), torch.rand(2, 3, 28, 28)),
        (lambda: WideResNet(depth=10, widen_factor=1), torch.rand(2, 3, 32)),
    ],
    ids=["resnet-channels", "lenet-channels", "wrn-3d"],
)
def test_wrong_channels_or_rank(model, bad):
    pattern = r"expected (a 4-D input|\d+ input channels)"
    with pytest.raises(ValueError, match=pattern), torch.no_grad():
        model().eval()(bad)


@pytest.mark.parametrize("cls", [VGG16, ResNet18, LeNet5, KerasMNISTCNN, KerasCIFARCNN, DigitsCNN])
def test_bad_num_classes(cls):
    with pytest.raises(ValueError, match="expected num_classes to be a positive int, got 0"):
        cls(num_classes=0)
    with pytest.raises(TypeError, match="expected num_classes to be a positive int, got True"):
        cls(num_classes=True)


def test_create_model_unknown_name_lists_valid_names():
    pattern = r"unknown model 'vgg19'; expected one of .*digits-cnn.*vgg16"
    with pytest.raises(ValueError, match=pattern):
        create_model("vgg19", num_classes=10, in_channels=3)
    with pytest.raises(TypeError, match="expected the model name to be a str"):
        create_model(16)


def test_create_model_defaults_and_kwargs():
    torch.manual_seed(0)
    assert create_model("lenet5").conv1[0].in_channels == 1
    assert create_model("wrn28-10", widen_factor=1).fc.out_features == 100
    net = create_model("resnet18", num_classes=4, in_channels=1, log_softmax_output=True)
    assert net.log_softmax_output and net.fc.out_features == 4 and net.stem[0].in_channels == 1
    with pytest.raises(TypeError):
        create_model("digits-cnn", depth=28)
