"""Layer presets of common third-party models (issue 14, item 6): torchvision's ResNets, VGG-BN and
Wide-ResNet, timm's ResNets, recognised by structure; the ``vgg16-bn`` name; errors that point to the
preset that fits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ib_plugins import wrap_model
from ib_plugins.layer_selection import expand_layer_spec, resolve_layers
from ib_plugins.models import create_model, list_models
from ib_plugins.presets import check_preset_fits, get_preset, list_presets, preset_for_model

tv = pytest.importorskip("torchvision.models", reason="torchvision builds the models these presets describe")

TORCHVISION = {
    "resnet18": "torchvision-resnet18",
    "resnet34": "torchvision-resnet34",
    "resnet50": "torchvision-resnet50",
    "wide_resnet50_2": "torchvision-wide-resnet50-2",
    "vgg11_bn": "torchvision-vgg11-bn",
    "vgg13_bn": "torchvision-vgg13-bn",
    "vgg16_bn": "torchvision-vgg16-bn",
    "vgg19_bn": "torchvision-vgg19-bn",
}


def _build(factory, **kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return factory(**kwargs)


@pytest.mark.parametrize(("builder", "preset_name"), TORCHVISION.items())
def test_torchvision_models_are_recognised_and_every_preset_layer_exists(builder, preset_name):
    net = _build(getattr(tv, builder), num_classes=10)
    preset = preset_for_model(net)
    assert preset is not None and preset.name == preset_name
    assert list(resolve_layers(net, preset.layers)) == list(preset.layers)
    assert set(preset.robust_layers) <= set(preset.layers) and preset.robust_layers
    assert preset.mask_layer in preset.layers
    # "robust" / "all" of the model's own preset, and the preset by name
    assert expand_layer_spec(net, "robust") == list(preset.robust_layers)
    assert expand_layer_spec(net, f"{preset_name}:all") == list(preset.layers)


@pytest.mark.parametrize("builder", ["resnet101", "wide_resnet101_2", "vgg16"])
def test_other_torchvision_models_get_no_preset(builder):
    assert preset_for_model(_build(getattr(tv, builder), num_classes=10)) is None


def test_the_paper_and_the_analogy_are_told_apart_in_the_descriptions():
    vgg = get_preset("torchvision-vgg16-bn")
    assert "the paper's Table III layers" in vgg.description and "analogy" not in vgg.description
    assert vgg.robust_layers == ("features.43", "classifier.1", "classifier.4")
    for name in ("torchvision-resnet18", "torchvision-resnet34", "torchvision-resnet50", "torchvision-wide-resnet50-2",
                 "torchvision-vgg11-bn", "torchvision-vgg13-bn", "torchvision-vgg19-bn", "timm-resnet18",
                 "timm-resnet34", "timm-resnet50"):
        description = get_preset(name).description
        assert "an analogy" in description and "not a finding of the paper" in description, name
        assert "robust = " in description
    assert get_preset("torchvision-resnet50").robust_layers == ("layer4.2", "avgpool")
    assert get_preset("timm-resnet18").robust_layers == ("layer4.1", "global_pool")


def test_robust_layers_of_a_torchvision_resnet_train_with_the_ib_term():
    net = _build(tv.resnet18, num_classes=10)
    ib = wrap_model(net, "robust", mask="code", num_classes=10)
    assert ib.layers == ("layer4.1", "avgpool")
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    out = ib(x)
    loss = F.cross_entropy(out, y) + ib.ib_loss(x, y, output=out)
    loss.backward()
    assert torch.isfinite(loss) and net.conv1.weight.grad is not None
    assert ib.unwrap() is net


@pytest.mark.parametrize(("name", "preset_name"), [("resnet18", "timm-resnet18"), ("resnet34", "timm-resnet34"),
                                                   ("resnet50", "timm-resnet50")])
def test_timm_resnets_are_recognised(name, preset_name):
    timm = pytest.importorskip("timm", reason="timm builds the models these presets describe")
    net = _build(timm.create_model, model_name=name, pretrained=False, num_classes=10)
    preset = preset_for_model(net)
    assert preset is not None and preset.name == preset_name
    assert list(resolve_layers(net, preset.layers)) == list(preset.layers)
    x = torch.rand(2, 3, 32, 32)
    ib = wrap_model(net, "robust")
    with torch.no_grad():
        ib.eval()(x)
    assert ib.layers == preset.robust_layers
    ib.unwrap()


def test_another_models_preset_points_to_the_one_that_fits():
    net = _build(tv.resnet18, num_classes=10)
    for spec in ("resnet18:robust", "resnet18"):
        with pytest.raises(ValueError) as info:
            wrap_model(net, spec)
        message = str(info.value)
        assert message.startswith("ib_layers: preset 'resnet18' does not fit ResNet: its layers 'stem', 'pool' are not "
                                  "submodules of ResNet")
        assert "the preset that fits this model is 'torchvision-resnet18'" in message
        assert "'torchvision-resnet18:robust'" in message
    with pytest.raises(ValueError, match=r"preset 'torchvision-resnet18' does not fit VGG16: .*the preset that fits "
                                         r"this model is 'vgg16'"):
        wrap_model(create_model("vgg16", num_classes=10), "torchvision-resnet18:robust")
    # a model without a preset: check_preset_fits says no preset describes it
    with pytest.raises(ValueError, match=r"no preset describes Sequential: pass dotted layer names"):
        check_preset_fits("vgg16", torch.nn.Sequential(torch.nn.Linear(2, 2)))
    assert check_preset_fits("vgg16-bn", create_model("vgg16", num_classes=10)).name == "vgg16-bn"


def test_vgg16_bn_is_a_name_of_the_librarys_vgg16():
    assert "vgg16-bn" in list_models() and "vgg16-bn" in list_presets()
    a, b = get_preset("vgg16"), get_preset("vgg16-bn")
    assert (a.layers, a.robust_layers, a.mask_layer, a.mask_k, a.record_masked) == (
        b.layers, b.robust_layers, b.mask_layer, b.mask_k, b.record_masked)
    net = create_model("vgg16-bn", num_classes=10)
    assert type(net).__name__ == "VGG16" and preset_for_model(net).name == "vgg16"
    assert expand_layer_spec(net, "vgg16-bn:robust") == ["block5", "fc1", "fc2"]
    from ib_plugins.training import TrainConfig, resolve_config

    for method in ("ce", "pgd-at"):  # the training defaults follow the preset, so both names train alike
        bn = resolve_config(TrainConfig(model="vgg16-bn", dataset="cifar10", method=method, ib=True, mask="code"))
        plain = resolve_config(TrainConfig(model="vgg16", dataset="cifar10", method=method, ib=True, mask="code"))
        assert (bn.ib_layers, bn.record_masked) == (plain.ib_layers, plain.record_masked)
