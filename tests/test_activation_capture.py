"""Tests of ib_plugins.activation_capture: clone semantics, train-only capture, hook hygiene."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _models import ReusedModuleNet, TinyResNet, TupleOutputNet, count_hooks, mlp

from ib_plugins import ActivationCapture, UnknownLayerError, capture_activations


def test_clone_protects_against_in_place_residual():
    net = TinyResNet().eval()
    x = torch.rand(4, 3, 8, 8)
    block = net.layer1[0]
    with capture_activations(net, ["stem", "layer1.0.bn2"], when="always") as cloned, \
            capture_activations(net, ["layer1.0.bn2"], when="always", clone=False) as by_ref:
        net(x)
    stem_out = cloned.activations["stem"]
    bn2_clone = cloned.activations["layer1.0.bn2"]
    bn2_ref = by_ref.activations["layer1.0.bn2"]
    with torch.no_grad():  # the value bn2 returned, recomputed by hand
        at_hook_time = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(stem_out)))))
        after_in_place = torch.relu(at_hook_time + stem_out)
    assert torch.allclose(bn2_clone, at_hook_time, atol=1e-6)
    # the uncloned reference was modified by `out += identity; relu_(out)` after the hook
    assert torch.allclose(bn2_ref, after_in_place, atol=1e-6)
    assert not torch.allclose(bn2_clone, bn2_ref)
    assert bool((bn2_ref >= 0).all()) and bool((bn2_clone < 0).any())


def test_train_only_capture_by_default():
    net = mlp()
    x = torch.rand(5, 1, 8, 8)
    with capture_activations(net, ["2", "4"]) as cap:
        net.train()(x)
        assert set(cap.activations) == {"2", "4"}
        net.eval()(x)  # a new forward resets the store and is not captured
        assert cap.activations == {}
        net.train()
        with torch.no_grad():
            net(x)
        assert cap.activations == {}
        net(x)
        assert cap.activations["2"].shape == (5, 32)


def test_when_always_captures_in_eval_and_no_grad():
    net = mlp().eval()
    x = torch.rand(3, 1, 8, 8)
    with capture_activations(net, ["1"], when="always") as cap:
        with torch.no_grad():
            out = net(x)
    assert out.shape == (3, 10)
    assert torch.allclose(cap.activations["1"], net[1](x.flatten(1)))


def test_captured_activation_carries_gradient_unless_detached():
    net = mlp().train()
    x = torch.rand(4, 1, 8, 8)
    with capture_activations(net, ["2"]) as cap, capture_activations(net, ["2"], detach=True) as det:
        net(x)
    assert cap.activations["2"].requires_grad
    assert not det.activations["2"].requires_grad
    cap.activations["2"].sum().backward()
    assert net[1].weight.grad is not None


def test_reused_module_gives_numbered_entries():
    net = ReusedModuleNet().train()
    x = torch.rand(6, 16)
    with capture_activations(net, ["act"]) as cap:
        net(x)
    acts = cap.activations
    assert list(acts) == ["act", "act#1"]
    first = torch.tanh(net.fc1(x))
    assert torch.allclose(acts["act"], first)
    assert torch.allclose(acts["act#1"], torch.tanh(net.fc2(first)))
    assert cap.fired() == {"act"}


def test_store_holds_the_latest_forward_only_and_pop_clears():
    net = mlp().train()
    with capture_activations(net, ["2"]) as cap:
        net(torch.rand(3, 1, 8, 8))
        net(torch.rand(7, 1, 8, 8))
        assert cap.activations["2"].shape[0] == 7
        popped = cap.pop()
        assert popped["2"].shape[0] == 7
        assert cap.activations == {} and cap.fired() == set()


def test_enabled_flag_pauses_capture():
    net = mlp().train()
    cap = ActivationCapture(net, ["2"])
    try:
        cap.enabled = False
        net(torch.rand(2, 1, 8, 8))
        assert cap.activations == {}
        cap.enabled = True
        net(torch.rand(2, 1, 8, 8))
        assert "2" in cap.activations
    finally:
        cap.remove()
    assert count_hooks(net) == 0


def test_no_hooks_left_after_normal_exit():
    net = TinyResNet()
    with capture_activations(net, ["stem", "layer1.0", "layer2.0.bn2", "fc"]) as cap:
        assert count_hooks(net) == 5  # four layers + the reset pre-hook on the root
        assert cap.num_hooks == 5
        net(torch.rand(2, 3, 8, 8))
    assert count_hooks(net) == 0
    assert cap.num_hooks == 0
    assert set(cap.activations) == {"stem", "layer1.0", "layer2.0.bn2", "fc"}  # still readable


def test_no_hooks_left_after_exception_in_with_block():
    net = TinyResNet()
    with pytest.raises(KeyError, match="raised on purpose"):
        with capture_activations(net, ["layer1.0.bn2", "fc"]):
            net(torch.rand(2, 3, 8, 8))
            raise KeyError("raised on purpose")
    assert count_hooks(net) == 0


def test_no_hooks_left_after_exception_in_forward():
    net = TupleOutputNet()
    with pytest.raises(TypeError):
        with capture_activations(net, ["fc1", "pair"], when="always"):
            net(torch.rand(2, 16))
    assert count_hooks(net) == 0


def test_non_tensor_output_raises_type_error_naming_the_layer():
    net = TupleOutputNet().train()
    with capture_activations(net, ["pair"]):
        with pytest.raises(TypeError, match=r"layer 'pair' \(_Pair\) returned tuple, not a tensor"):
            net(torch.rand(2, 16))


def test_unknown_layer_registers_nothing():
    net = TinyResNet()
    with pytest.raises(UnknownLayerError, match="layer9"):
        ActivationCapture(net, ["stem", "layer9"])
    assert count_hooks(net) == 0


def test_bad_when_raises():
    with pytest.raises(ValueError, match=r"when: expected 'train' or 'always', got 'eval'"):
        ActivationCapture(mlp(), ["1"], when="eval")


def test_remove_is_idempotent_and_repeated_captures_do_not_leak():
    net = mlp()
    for _ in range(50):
        cap = ActivationCapture(net, ["1", "3"])
        cap.remove()
        cap.remove()
    assert count_hooks(net) == 0


def test_capture_does_not_change_outputs():
    net = TinyResNet().eval()
    x = torch.rand(3, 3, 8, 8)
    ref = net(x)
    with capture_activations(net, ["layer1.0.bn2", "layer1.1.bn2", "pool"], when="always"):
        out = net(x)
    assert torch.equal(ref, out)
