"""ART parity: the IB classifier answers ART's PyTorchClassifier API as the plain network's classifier does.

Every comparison builds ART's own ``PyTorchClassifier`` on a copy of the same network with the same
weights and asks both the same question.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn as nn

art = pytest.importorskip("art", reason="ART (pip install 'ib-plugins[art]') is not installed")
np = pytest.importorskip("numpy")

from art.estimators.classification import PyTorchClassifier  # noqa: E402

from ib_plugins import wrap_model  # noqa: E402
from ib_plugins.adapters.art_training import (  # noqa: E402
    IBCrossEntropyLoss,
    IBPyTorchClassifier,
    make_art_classifier,
    make_art_proxy_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


class Net(nn.Module):
    """ART's test model for MNIST-shaped inputs (conv, relu, pool, fully connected), on 1x12x12."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2, 2)
        self.fullyconnected = nn.Linear(2 * 5 * 5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fullyconnected(self.pool(self.relu(self.conv(x))).flatten(1))


def _count_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _pair(network: nn.Module | None = None, **ib_kwargs):
    torch.manual_seed(0)
    net = network if network is not None else Net()
    plain_net = copy.deepcopy(net)
    common = {"input_shape": (1, 12, 12), "nb_classes": 4, "clip_values": (0.0, 1.0)}
    plain = PyTorchClassifier(plain_net, loss=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(plain_net.parameters()),
                              device_type="cpu", **common)
    ib = wrap_model(net, ["relu"] if hasattr(net, "relu") else ["1"], num_classes=4, **ib_kwargs)
    clf = make_art_classifier(ib, optimizer=torch.optim.Adam(ib.parameters()), **common)
    return plain, clf


def _x(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 12, 12), dtype=np.float32)


def test_layer_names_are_the_networks_not_the_wrappers():
    plain, clf = _pair()
    assert clf.layer_names == plain.layer_names == ["conv", "relu", "pool", "fullyconnected"]
    seq = nn.Sequential(nn.Flatten(), nn.Linear(144, 8), nn.ReLU(), nn.Linear(8, 4))
    plain, clf = _pair(seq)
    assert clf.layer_names == plain.layer_names == ["0", "1", "2", "3"]


def test_get_activations_by_index_and_name_match_the_plain_classifier():
    plain, clf = _pair()
    x = _x()
    for i, name in enumerate(plain.layer_names):
        expected = plain.get_activations(x, i, batch_size=4)
        np.testing.assert_array_equal(clf.get_activations(x, i, batch_size=4), expected)
        np.testing.assert_array_equal(clf.get_activations(x, name, batch_size=4), expected)
    np.testing.assert_array_equal(clf.get_activations(x, -1), plain.get_activations(x, -1))
    # dotted paths of the network, also with the wrapper's "model." prefix
    np.testing.assert_array_equal(clf.get_activations(x, "model.conv"), plain.get_activations(x, "conv"))
    framework = clf.get_activations(torch.from_numpy(x), "pool", framework=True)
    assert isinstance(framework, torch.Tensor) and framework.requires_grad
    with pytest.raises(ValueError, match=r"Layer name bottleneck not supported: expected one of layer_names"):
        clf.get_activations(x, "bottleneck")
    with pytest.raises(ValueError, match="close matches: 'conv'"):
        clf.get_activations(x, "conw")
    with pytest.raises(ValueError, match=r"layer: expected an index in \[-4, 3\]"):
        clf.get_activations(x, 4)
    with pytest.raises(TypeError, match="Layer must be of type str or int"):
        clf.get_activations(x, 1.5)


def test_get_activations_leaves_no_hooks_and_restores_modes():
    _, clf = _pair()
    ib = clf.ib_model
    before = _count_hooks(ib)
    ib.train()
    x = _x(4)
    for i in range(1000):
        clf.get_activations(x, "conv" if i % 2 else 0)
    assert _count_hooks(ib) == before
    assert ib.training and all(m.training for m in ib.modules())
    assert ib.num_records == 0  # activations read in eval mode are never recorded for the IB term


def test_predictions_gradients_and_losses_equal_the_plain_classifier():
    plain, clf = _pair()
    x, y = _x(), np.eye(4, dtype=np.float32)[np.arange(10) % 4]  # one-hot, as ART's gradient methods take them
    np.testing.assert_allclose(clf.predict(x), plain.predict(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(clf.class_gradient(x, label=1), plain.class_gradient(x, label=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.loss_gradient(x, y), plain.loss_gradient(x, y), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(clf.compute_loss(x, y), plain.compute_loss(x, y), rtol=1e-6)
    np.testing.assert_allclose(clf.compute_loss(x, y, reduction="none"), plain.compute_loss(x, y, reduction="none"),
                               rtol=1e-6)
    assert clf.channels_first == plain.channels_first and clf.input_shape == plain.input_shape
    np.testing.assert_array_equal(clf.clip_values, plain.clip_values)
    params = clf.get_params()
    assert params["nb_classes"] == 4 and params["loss"] is clf.loss
    clf.set_params(clip_values=(0.0, 2.0))
    np.testing.assert_array_equal(clf.clip_values, np.array([0.0, 2.0], dtype=np.float32))


def test_clone_for_refitting_trains_with_the_ib_term_of_its_own_model():
    _, clf = _pair()
    clone = clf.clone_for_refitting()
    assert isinstance(clone, IBPyTorchClassifier) and clone.model is not clf.model
    assert isinstance(clone.loss, IBCrossEntropyLoss) and clone.loss is not clf.loss
    assert clone.loss.ib_model is clone.ib_model and clone.loss.reduction == clf.loss.reduction
    assert clone.ib_model.layers == clf.ib_model.layers and type(clone.optimizer) is type(clf.optimizer)
    assert clone.optimizer.param_groups[0]["params"][0] is next(clone.model.parameters())
    x, y = _x(16), np.arange(16) % 4
    clone.fit(x, y, batch_size=8, nb_epochs=1)
    assert clone.loss.num_ib_terms == 2  # one IB term per training batch, from the clone's own forwards
    assert clf.loss.num_calls == 0 and clf.loss.num_ib_terms == 0


def test_repr_reads_like_arts_and_names_the_ib_term():
    _, clf = _pair()
    text = repr(clf)
    for message in ("art.estimators.classification.pytorch.PyTorchClassifier",
                    "(conv): Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))",
                    "(fullyconnected): Linear(in_features=50, out_features=4, bias=True)",
                    "loss=CrossEntropyLoss(), optimizer=Adam", "input_shape=(1, 12, 12), nb_classes=4",
                    "clip_values=array([0., 1.], dtype=float32", "preprocessing_defences=None, postprocessing_defences=None"):
        assert message in text, message
    assert "IBPyTorchClassifier" in text and "the IB term of IBCrossEntropyLoss(" in text


def test_save_writes_the_networks_state_dict_and_pickling_keeps_the_classifier(tmp_path):
    plain, clf = _pair()
    clf.save("m", path=str(tmp_path))
    state = torch.load(tmp_path / "m.model", weights_only=True)
    assert set(state) == set(plain.model.state_dict())
    plain.model.load_state_dict(state)  # a plain classifier of the same network loads the file
    loaded = pickle.loads(pickle.dumps(clf))
    assert isinstance(loaded, IBPyTorchClassifier) and loaded.loss.ib_model is loaded.ib_model
    assert loaded.model is loaded.ib_model.model
    x = _x()
    np.testing.assert_allclose(loaded.predict(x), clf.predict(x), rtol=1e-6)
    assert loaded.layer_names == clf.layer_names


def test_proxy_classifier_carries_no_hooks_left_on_the_network():
    _, clf = _pair()
    network = clf.model
    assert network is clf.ib_model.model
    leaked = [network.conv.register_forward_hook(lambda *a: None) for _ in range(2000)]  # as ART's get_activations
    try:
        proxy = make_art_proxy_classifier(clf)
        assert _count_hooks(proxy.model) == 0
        assert len(network.conv._forward_hooks) >= 2000 and clf.ib_model.has_hooks  # the original keeps its own
        assert set(proxy.model.state_dict()) == set(clf.model.state_dict())
    finally:
        for handle in leaked:
            handle.remove()


@pytest.mark.slow
def test_the_readme_art_example_runs(tmp_path):
    import pathlib
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Using it with ART", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    script = tmp_path / "readme_art.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "training batches got the IB term" in done.stdout


# -- a stock ART setup never silently loses the IB term -------------------------------------------------


def test_stock_pytorchclassifier_with_cross_entropy_warns_that_the_ib_term_is_missing():
    torch.manual_seed(0)
    net = Net()
    ib = wrap_model(net, ["relu"], num_classes=4)
    clf = PyTorchClassifier(ib, loss=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(ib.parameters(), lr=0.01),
                            input_shape=(1, 12, 12), nb_classes=4, clip_values=(0.0, 1.0), device_type="cpu")
    x, y = _x(80), np.arange(80) % 4
    with pytest.warns(UserWarning, match="training without the information-bottleneck term") as caught:
        clf.fit(x, y, batch_size=8, nb_epochs=2)
    messages = [str(w.message) for w in caught if "information-bottleneck" in str(w.message)]
    assert len(messages) == 1 and "make_art_classifier" in messages[0]  # once, naming the fix


@pytest.mark.parametrize("how", ["make_art_classifier", "manual_ib_loss", "trades_two_forwards", "alpha_beta_zero"])
def test_no_warning_when_the_ib_term_is_computed(how, recwarn):
    torch.manual_seed(0)
    x, y = _x(80), np.arange(80) % 4
    if how == "make_art_classifier":
        _, clf = _pair()
        clf.fit(x, y, batch_size=8, nb_epochs=2)
        assert clf.loss.num_ib_terms == 20
    else:
        ib = wrap_model(Net(), ["relu"], num_classes=4, **({"alpha": 0.0, "beta": 0.0} if how == "alpha_beta_zero" else {}))
        opt = torch.optim.SGD(ib.parameters(), lr=0.01)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for i in range(0, 80, 8):
            xb, yb = xt[i : i + 8], yt[i : i + 8]
            logits = ib.train()(xb)
            if how == "trades_two_forwards":
                logits_adv = ib(xb.clamp(0.05, 0.95))  # a second forward, never used by the IB term
                loss = nn.functional.cross_entropy(logits_adv, yb) + ib.ib_loss(xb, yb, output=logits)
            elif how == "manual_ib_loss":
                loss = nn.functional.cross_entropy(logits, yb) + ib.ib_loss(xb, yb)
            else:
                loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert not [w for w in recwarn if "information-bottleneck term" in str(w.message)]


def test_model_is_the_network_as_for_a_classifier_of_the_plain_network():
    plain, clf = _pair()
    assert clf.model is clf.ib_model.model and type(clf.model) is type(plain.model)
    assert [n for n, _ in clf.model.named_children()] == [n for n, _ in plain.model.named_children()]
    # what ART's trainers and tests read: named_modules of _model._model (OAAT), state_dict (AWP, OAAT, save)
    assert list(dict(clf._model._model.named_modules())) == list(dict(plain._model._model.named_modules()))
    assert list(clf.model.state_dict()) == list(plain.model.state_dict())
    x = torch.from_numpy(_x())
    rebuilt = nn.Sequential(*list(clf.model.children())[:2])  # as ART's test_get_activation does
    np.testing.assert_allclose(rebuilt(x).detach().numpy(), clf.get_activations(_x(), 1), rtol=1e-6)


def test_a_trainer_calling_classifier_model_directly_still_gets_the_ib_term():
    _, clf = _pair(beta=1.0)
    x, y = torch.from_numpy(_x(8)), torch.arange(8) % 4
    clf.model.train(mode=True)  # as AWP/OAAT: train mode set on classifier.model (the network) only
    out = clf.model(x)
    loss = clf.loss(out, y)
    assert clf.loss.num_ib_terms == 1 and float(clf.loss.last_ib.abs()) > 1e-4
    assert torch.isclose(loss, nn.functional.cross_entropy(out, y) + clf.loss.last_ib)
