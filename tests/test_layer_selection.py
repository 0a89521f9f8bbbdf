"""Tests of ib_plugins.layer_selection: dotted names, helpful errors, layer specifications."""

from __future__ import annotations

import pytest
import torch.nn as nn
from _models import DigitsLikeNet, NoPresetNet, TinyResNet, mlp

from ib_plugins import IBPluginsError, UnknownLayerError, list_layer_names, resolve_layers
from ib_plugins.layer_selection import expand_layer_spec
from ib_plugins.presets import get_preset


def test_list_layer_names_nested_dotted_in_registration_order():
    names = list_layer_names(TinyResNet())
    assert "" not in names
    for expected in ("stem", "stem.0", "layer1.0.conv1", "layer1.1.bn2", "layer2.0.downsample.0", "pool.1", "fc"):
        assert expected in names
    assert names.index("stem") < names.index("layer1.0.conv1") < names.index("fc")


def test_list_layer_names_of_type():
    names = list_layer_names(TinyResNet(), of_type=nn.BatchNorm2d)
    assert names == ["stem.1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1", "layer1.1.bn2",
                     "layer2.0.bn1", "layer2.0.bn2", "layer2.0.downsample.1"]
    assert list_layer_names(mlp(), of_type=(nn.Linear, nn.Flatten)) == ["0", "1", "3", "5"]


def test_shared_module_listed_once():
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    assert list_layer_names(net) == ["0", "1", "2"]


def test_resolve_nested_names_returns_the_submodules_in_order():
    net = TinyResNet()
    got = resolve_layers(net, ["layer2.0.downsample.0", "layer1.0.bn2", "fc"])
    assert list(got) == ["layer2.0.downsample.0", "layer1.0.bn2", "fc"]
    assert got["layer1.0.bn2"] is net.layer1[0].bn2
    assert got["layer2.0.downsample.0"] is net.layer2[0].downsample[0]
    assert got["fc"] is net.fc


def test_resolve_single_string_is_one_name():
    net = TinyResNet()
    assert list(resolve_layers(net, "layer1.0")) == ["layer1.0"]


def test_unknown_layer_error_is_helpful():
    net = TinyResNet()
    with pytest.raises(UnknownLayerError) as info:
        resolve_layers(net, ["layer1.0.conv3"])
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, IBPluginsError)
    msg = str(err)
    assert "TinyResNet" in msg  # names the model class
    assert "'layer1.0.conv3'" in msg
    assert "layer1.0.conv1" in msg or "layer1.0.conv2" in msg  # close matches
    assert "list_layer_names" in msg


def test_unknown_layer_error_catchable_as_value_error():
    with pytest.raises(ValueError, match=r"is not a submodule of Sequential"):
        resolve_layers(mlp(), ["9"])


def test_parameter_name_is_not_a_layer():
    with pytest.raises(UnknownLayerError, match=r"'1\.weight' is not a submodule of Sequential"):
        resolve_layers(mlp(), ["1.weight"])


def test_repeated_name_raises():
    with pytest.raises(UnknownLayerError, match=r"'fc' is listed twice"):
        resolve_layers(TinyResNet(), ["fc", "layer1", "fc"])


@pytest.mark.parametrize("bad", [3, None, ""])
def test_non_string_or_empty_names_raise(bad):
    with pytest.raises(UnknownLayerError, match="list_layer_names"):
        resolve_layers(mlp(), [bad])


# --------------------------------------------------------------------------------------------
# expand_layer_spec
# --------------------------------------------------------------------------------------------


def test_spec_list_and_single_name_pass_through():
    net = TinyResNet()
    assert expand_layer_spec(net, ["layer1.0", "fc"]) == ["layer1.0", "fc"]
    assert expand_layer_spec(net, ("layer1.0",)) == ["layer1.0"]
    assert expand_layer_spec(net, "layer2") == ["layer2"]


def test_spec_preset_names():
    net = NoPresetNet()  # a preset name does not need the model to declare a preset
    assert expand_layer_spec(net, "vgg16") == list(get_preset("vgg16").layers)
    assert expand_layer_spec(net, "vgg16:robust") == ["block5", "fc1", "fc2"]
    assert expand_layer_spec(net, "vgg16:all") == list(get_preset("vgg16").layers)


def test_spec_preset_with_unknown_subset_raises():
    with pytest.raises(ValueError, match=r"expected the subset 'all' or 'robust'"):
        expand_layer_spec(NoPresetNet(), "vgg16:fast")


def test_spec_robust_subset_of_preset_without_robust_layers_raises():
    with pytest.raises(ValueError, match="has no robust layers"):
        expand_layer_spec(NoPresetNet(), "resnet18:robust")


def test_spec_all_and_robust_use_the_models_own_preset():
    net = DigitsLikeNet()
    assert expand_layer_spec(net, "all") == ["conv1", "conv2", "conv3", "fc1"]
    assert expand_layer_spec(net, "robust") == ["conv3", "fc1"]
    assert list(resolve_layers(net, expand_layer_spec(net, "all"))) == ["conv1", "conv2", "conv3", "fc1"]


@pytest.mark.parametrize("spec", ["all", "robust", 2])
def test_spec_needing_a_preset_on_a_model_without_one_raises(spec):
    with pytest.raises(ValueError, match=r"NoPresetNet has none") as info:
        expand_layer_spec(NoPresetNet(), spec)
    msg = str(info.value)
    assert "list_layer_names" in msg and "ib_preset" in msg


def test_spec_int_takes_the_last_n_hook_points():
    net = DigitsLikeNet()
    assert expand_layer_spec(net, 1) == ["fc1"]
    assert expand_layer_spec(net, 3) == ["conv2", "conv3", "fc1"]
    assert expand_layer_spec(net, 4) == ["conv1", "conv2", "conv3", "fc1"]


@pytest.mark.parametrize("n", [0, -1, 5])
def test_spec_int_out_of_range_raises(n):
    with pytest.raises(ValueError, match=r"ib_layers: expected an int in \[1, 4\]"):
        expand_layer_spec(DigitsLikeNet(), n)


@pytest.mark.parametrize("spec", [True, 2.5, {"fc": 1}, None, object()])
def test_spec_bad_types_raise_type_error(spec):
    with pytest.raises(TypeError, match="ib_layers: expected layer names, a preset name or an int"):
        expand_layer_spec(TinyResNet(), spec)


def test_spec_empty_list_raises():
    with pytest.raises(ValueError, match="ib_layers: expected at least one layer"):
        expand_layer_spec(TinyResNet(), [])


def test_model_declaring_an_unknown_preset_raises():
    class Weird(NoPresetNet):
        ib_preset = "no-such-preset"

    with pytest.raises(ValueError, match="unknown layer preset 'no-such-preset'"):
        expand_layer_spec(Weird(), "all")
