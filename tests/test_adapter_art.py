"""Tests of ib_plugins.adapters.art_training (ART 1.20.1 loss, classifier and trainers).

Tiny model (conv 1->4 on 1x8x8 + linear, 3 classes), 24 samples in 3 batches of 8, PGD with 2
iterations. Every run seeds torch and numpy's global RNG identically (ART shuffles with numpy's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

art = pytest.importorskip(
    "art", reason="the ART adapter tests need adversarial-robustness-toolbox (pip install 'ib-plugins[art]')"
)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from art.attacks.evasion import ProjectedGradientDescent  # noqa: E402
from art.data_generators import NumpyDataGenerator  # noqa: E402
from art.defences.trainer import (  # noqa: E402
    AdversarialTrainer,
    AdversarialTrainerFBFPyTorch,
    AdversarialTrainerMadryPGD,
    AdversarialTrainerTRADESPyTorch,
)
from art.estimators.classification import PyTorchClassifier  # noqa: E402

from ib_plugins import ChannelMask, wrap_model  # noqa: E402
from ib_plugins.adapters import art_training as at  # noqa: E402

N, C, BATCH = 24, 3, 8
NB_BATCHES = N // BATCH
REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 8 * 8, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.relu(self.conv(x))))


class SpyLoss(at.IBCrossEntropyLoss):
    """Records, for each IB term, whether the regularised forward was the clean batch, and target dtypes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passes: list[str] = []
        self.target_dtypes: set[torch.dtype] = set()

    def forward(self, input, target):  # noqa: A002
        self.target_dtypes.add(target.dtype)
        return super().forward(input, target)

    def ib_term(self, output, target):
        record = self.ib_model.find_record(output)
        clean = self.current_clean_batch
        if record is not None and clean is not None:
            self.passes.append("clean" if torch.equal(record.inputs, clean.x) else "other")
        return super().ib_term(output, target)


def _data(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 8, 8), dtype=np.float32), np.arange(n) % C


def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def _setup(beta: float = 1.0, *, alpha: float = 0.0, mask: ChannelMask | None = None, loss_cls=SpyLoss,
           plain_loss: bool = False, **loss_kw):
    _seed()
    ib = wrap_model(TinyNet(), ["relu"], alpha=alpha, beta=beta, num_classes=C, mask=mask,
                    mask_layer="relu" if mask is not None else None)
    opt = torch.optim.SGD(ib.parameters(), lr=0.1)
    loss = nn.CrossEntropyLoss() if plain_loss else loss_cls(ib, **loss_kw)
    clf = at.make_art_classifier(ib, loss=loss, optimizer=opt, input_shape=(1, 8, 8), nb_classes=C)
    return ib, clf


def _pgd(clf, **kw):
    return ProjectedGradientDescent(clf, eps=0.1, eps_step=0.05, max_iter=2, verbose=False, **kw)


def _oaat_params() -> dict:
    return {
        "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "lr_schedule": "cosine", "oaat_warmup": 0,
        "awp_warmup": 0, "awp_gamma": 0.005, "beta": 1.0, "beta_final": 1.0,
        "epsilon": 0.1, "i_epsilon": 0.1, "alternate_iter_eps": 1.0, "max_iter": 2,  # never LPIPS
        "mixup_alpha": 0.0, "mixup_epsilon": 0.1, "lpips_weight": 0.0, "i_lpips_weight": 0.0,
        "list_swa_epoch": [], "list_swa_tau": [], "swa_save_epoch": 10**6, "load_swa_model_tau": 0.995,
        "models_path": None, "layer_names_activation": [], "norm": np.inf,
    }


def _oaat(clf):
    proxy = at.make_art_proxy_classifier(clf)
    return at.IBAdversarialTrainerOAATPyTorch(clf, proxy, proxy, [], _pgd(clf), _oaat_params())


TRAINERS = {
    "AdversarialTrainer": lambda clf: AdversarialTrainer(clf, _pgd(clf), ratio=0.5),
    "IBAdversarialTrainer": lambda clf: at.IBAdversarialTrainer(clf, _pgd(clf), ratio=0.5),
    "AdversarialTrainerMadryPGD": lambda clf: AdversarialTrainerMadryPGD(clf, eps=0.1, eps_step=0.05, max_iter=2),
    "IBAdversarialTrainerMadryPGD": lambda clf: at.IBAdversarialTrainerMadryPGD(
        clf, eps=0.1, eps_step=0.05, max_iter=2),
    "AdversarialTrainerTRADESPyTorch": lambda clf: AdversarialTrainerTRADESPyTorch(clf, _pgd(clf), beta=1.0),
    "IBAdversarialTrainerTRADESPyTorch": lambda clf: at.IBAdversarialTrainerTRADESPyTorch(clf, _pgd(clf), beta=1.0),
    "IBAdversarialTrainerAWPPyTorch-PGD": lambda clf: at.IBAdversarialTrainerAWPPyTorch(
        clf, at.make_art_proxy_classifier(clf), _pgd(clf), mode="PGD", gamma=0.01, beta=1.0, warmup=0),
    "IBAdversarialTrainerAWPPyTorch-TRADES": lambda clf: at.IBAdversarialTrainerAWPPyTorch(
        clf, at.make_art_proxy_classifier(clf), _pgd(clf), mode="TRADES", gamma=0.01, beta=1.0, warmup=0),
    "IBAdversarialTrainerFBFPyTorch": lambda clf: at.IBAdversarialTrainerFBFPyTorch(clf, eps=0.1),
    "IBAdversarialTrainerOAATPyTorch": _oaat,
    "AdversarialTrainerMARTPyTorch": lambda clf: at.AdversarialTrainerMARTPyTorch(clf, _pgd(clf), beta=1.0),
    "IBAdversarialTrainerMARTPyTorch": lambda clf: at.IBAdversarialTrainerMARTPyTorch(clf, _pgd(clf), beta=1.0),
}

# Which forward the IB term regularises with ib_pass="trainer" (recorded only where an IB* class
# provides the clean batch); "other" = adversarial or mixed batch.
EXPECTED_PASS = {
    "IBAdversarialTrainer": "other",
    "IBAdversarialTrainerMadryPGD": "other",
    "IBAdversarialTrainerTRADESPyTorch": "clean",
    "IBAdversarialTrainerAWPPyTorch-PGD": "other",
    "IBAdversarialTrainerAWPPyTorch-TRADES": "clean",
    "IBAdversarialTrainerFBFPyTorch": "other",
    "IBAdversarialTrainerOAATPyTorch": "clean",
    "IBAdversarialTrainerMARTPyTorch": "other",
}

# Extra clean forwards per batch with ib_pass="clean".
EXTRA_CLEAN_FORWARDS = {
    "IBAdversarialTrainer": 1,
    "IBAdversarialTrainerMadryPGD": 1,
    "IBAdversarialTrainerTRADESPyTorch": 0,
    "IBAdversarialTrainerAWPPyTorch-PGD": 1,
    "IBAdversarialTrainerAWPPyTorch-TRADES": 0,
    "IBAdversarialTrainerFBFPyTorch": 1,
    "IBAdversarialTrainerOAATPyTorch": 0,
    "IBAdversarialTrainerMARTPyTorch": 0,
}


def _fit(name: str, clf, *, x=None, y=None, nb_epochs: int = 1) -> None:
    x0, y0 = _data()
    x = x0 if x is None else x
    y = y0 if y is None else y
    np.random.seed(0)
    TRAINERS[name](clf).fit(x, y, batch_size=BATCH, nb_epochs=nb_epochs)


def _params(ib) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ib.model.state_dict().items()}


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ---------------------------------------------------------------------------------------------
# The IB term's gradient reaches the parameters, only on training forwards, on the documented pass
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TRAINERS))
def test_ib_term_changes_the_update_and_skips_attack_calls(name: str) -> None:
    ib0, clf0 = _setup(beta=0.0)
    _fit(name, clf0)
    ib1, clf1 = _setup(beta=1.0)
    _fit(name, clf1)
    loss = clf1.loss
    assert loss.num_ib_terms == NB_BATCHES  # exactly one IB term per training batch ...
    assert loss.num_calls > loss.num_ib_terms  # ... and none in the attack's loss calls
    assert _max_diff(_params(ib0), _params(ib1)) > 1e-6
    assert float((ib0.model.conv.weight - ib1.model.conv.weight).detach().abs().max()) > 1e-6
    if name in EXPECTED_PASS:
        assert loss.passes == [EXPECTED_PASS[name]] * NB_BATCHES
    ib1.unwrap()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in ib1.model.modules())


def test_stock_fbf_gets_no_ib_term_because_it_updates_in_eval_mode() -> None:
    ib, clf = _setup(beta=1.0)
    x, y = _data()
    np.random.seed(0)
    AdversarialTrainerFBFPyTorch(clf, eps=0.1).fit(x, np.eye(C, dtype=np.float32)[y], batch_size=BATCH, nb_epochs=1)
    assert clf.loss.num_calls > 0 and clf.loss.num_ib_terms == 0  # the upstream bug the IB class fixes


@pytest.mark.parametrize("name", sorted(EXTRA_CLEAN_FORWARDS))
def test_ib_pass_clean_regularises_the_clean_batch(name: str) -> None:
    ib, clf = _setup(beta=1.0, ib_pass="clean")
    _fit(name, clf)
    assert clf.loss.num_ib_terms == NB_BATCHES
    assert clf.loss.num_extra_forwards == EXTRA_CLEAN_FORWARDS[name] * NB_BATCHES
    if EXPECTED_PASS[name] == "clean":  # the trainer hands the clean logits to the loss
        assert clf.loss.passes == ["clean"] * NB_BATCHES


def test_ib_pass_clean_with_a_stock_trainer_says_which_class_to_use() -> None:
    ib, clf = _setup(beta=1.0, ib_pass="clean")
    with pytest.raises(RuntimeError, match="IBAdversarialTrainerMadryPGD"):
        _fit("AdversarialTrainerMadryPGD", clf)


def test_beta_zero_is_plain_cross_entropy() -> None:
    for ib_name, stock_name in (
        ("IBAdversarialTrainerTRADESPyTorch", "AdversarialTrainerTRADESPyTorch"),
        ("IBAdversarialTrainerMadryPGD", "AdversarialTrainerMadryPGD"),
    ):
        ib0, clf0 = _setup(beta=0.0)
        _fit(ib_name, clf0)
        ib_plain, clf_plain = _setup(plain_loss=True)
        _fit(stock_name, clf_plain)
        assert _max_diff(_params(ib0), _params(ib_plain)) < 1e-5, ib_name


def test_x_for_ib_input_differs_from_clean() -> None:
    ib_c, clf_c = _setup(beta=1.0, alpha=1.0, x_for_ib="clean")
    _fit("IBAdversarialTrainerMadryPGD", clf_c)
    ib_i, clf_i = _setup(beta=1.0, alpha=1.0, x_for_ib="input")
    _fit("IBAdversarialTrainerMadryPGD", clf_i)
    assert _max_diff(_params(ib_c), _params(ib_i)) > 1e-7


def test_fit_generator_with_the_mixin() -> None:
    ib, clf = _setup(beta=1.0)
    x, y = _data()
    np.random.seed(0)
    gen = NumpyDataGenerator(x, np.eye(C, dtype=np.float32)[y], batch_size=BATCH, shuffle=True)
    at.IBAdversarialTrainerMARTPyTorch(clf, _pgd(clf), beta=1.0).fit_generator(gen, nb_epochs=1)
    assert clf.loss.num_ib_terms == NB_BATCHES


def test_torch2_schedulers_step_once_per_epoch() -> None:
    # ART's TRADES/AWP reject torch>=2 schedulers and AdversarialTrainer steps them every batch;
    # MART and IBAdversarialTrainer accept them and step once per epoch.
    x, y = _data()
    for make in (
        lambda clf: at.AdversarialTrainerMARTPyTorch(clf, _pgd(clf), beta=1.0),
        lambda clf: at.IBAdversarialTrainer(clf, _pgd(clf), ratio=1.0),
    ):
        ib, clf = _setup(beta=1.0)
        scheduler = torch.optim.lr_scheduler.StepLR(clf.optimizer, step_size=1, gamma=0.5)
        trainer = make(clf)
        kwargs = {"validation_data": (x, y)} if isinstance(trainer, at.AdversarialTrainerMARTPyTorch) else {}
        trainer.fit(x, y, batch_size=BATCH, nb_epochs=2, scheduler=scheduler, **kwargs)
        assert clf.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**2)
        assert clf.loss.num_ib_terms == 2 * NB_BATCHES


# ---------------------------------------------------------------------------------------------
# Attack-side calls, reduction, labels
# ---------------------------------------------------------------------------------------------
def test_loss_gradient_equals_plain_cross_entropy_gradient() -> None:
    ib, clf = _setup(beta=1.0)
    plain = PyTorchClassifier(ib, nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=C, clip_values=(0, 1),
                              device_type="cpu")
    x, y = _data(8)
    y = np.eye(C, dtype=np.float32)[y]  # ART's loss_gradient wants one-hot labels
    np.testing.assert_allclose(clf.loss_gradient(x, y), plain.loss_gradient(x, y), rtol=1e-5, atol=1e-7)
    assert ib.num_records == 0  # eval mode: nothing recorded
    # training_mode=True records the forward, but its input requires grad: still plain CE.
    g_ib = clf.loss_gradient(x, y, training_mode=True)
    np.testing.assert_allclose(g_ib, plain.loss_gradient(x, y, training_mode=True), rtol=1e-5, atol=1e-7)
    assert clf.loss.num_calls == 2 and clf.loss.num_ib_terms == 0


def test_reduction_none_via_compute_loss() -> None:
    ib, clf = _setup(beta=1.0)
    x, y = _data(8)
    per_sample = clf.compute_loss(x, y, reduction="none")
    assert per_sample.shape == (8,)
    logits = clf.predict(x)
    expected = nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y), reduction="none").numpy()
    np.testing.assert_allclose(per_sample, expected, rtol=1e-5, atol=1e-6)
    assert clf.loss.reduction == "mean"  # ART restored it
    # In training mode with reduction="none" the IB term is left out (documented).
    loss = at.IBCrossEntropyLoss(ib, reduction="none")
    out = ib.train()(torch.from_numpy(x))
    expected_t = nn.functional.cross_entropy(out, torch.from_numpy(y), reduction="none")
    torch.testing.assert_close(loss(out, torch.from_numpy(y)), expected_t)
    assert loss.num_ib_terms == 0
    summed = at.IBCrossEntropyLoss(ib, reduction="sum")
    assert summed(ib(torch.from_numpy(x)), torch.from_numpy(y)).shape == () and summed.num_ib_terms == 1


def test_label_formats_give_the_same_training() -> None:
    x, y = _data()
    ib_a, clf_a = _setup(beta=1.0)
    _fit("IBAdversarialTrainerTRADESPyTorch", clf_a, y=y)
    ib_b, clf_b = _setup(beta=1.0)
    _fit("IBAdversarialTrainerTRADESPyTorch", clf_b, y=np.eye(C, dtype=np.float32)[y])
    assert _max_diff(_params(ib_a), _params(ib_b)) == 0.0
    assert clf_a.loss.target_dtypes == {torch.int64}  # a CE subclass keeps ART's integer labels
    assert clf_a._reduce_labels


def test_small_last_batch_gets_no_ib_term() -> None:
    ib, clf = _setup(beta=1.0)
    x, y = _data(17)  # batches of 8, 8, 1
    clf.fit(x, y, batch_size=8, nb_epochs=1)
    assert clf.loss.num_ib_terms == 2


# ---------------------------------------------------------------------------------------------
# The channel mask inside the trainers
# ---------------------------------------------------------------------------------------------
def _mask_events(ib, mask):
    events: list[tuple[int, bool, bool]] = []
    last = [mask.num_masked]

    def hook(module, inputs, output):
        masked = mask.num_masked > last[0]
        last[0] = mask.num_masked
        events.append((mask.step, module.training and torch.is_grad_enabled(), masked))

    handle = ib.model.relu.register_forward_hook(hook)
    return events, handle


def _per_batch(events):
    """[(step, masked)] per training batch, from the training forwards' events."""
    batches: list[tuple[int, bool]] = []
    for step, training, masked in events:
        if not training:
            continue
        if not batches or batches[-1][0] != step:
            batches.append((step, masked))
        else:
            assert batches[-1][1] == masked  # all forwards of one batch are masked alike
    return batches


@pytest.mark.parametrize(
    ("name", "forwards_per_batch", "expected"),
    [
        ("IBAdversarialTrainerTRADESPyTorch", 2, [(0, True), (1, False), (2, True)] * 2),
        ("IBAdversarialTrainerMARTPyTorch", 2, [(0, True), (1, False), (2, True)] * 2),
        ("IBAdversarialTrainerMadryPGD", 1, [(0, True), (1, False), (2, True)] * 2),
        ("IBAdversarialTrainerFBFPyTorch", 1, [(0, True), (1, False), (2, True)] * 2),
        # stock AdversarialTrainer: IBPyTorchClassifier.fit gives labels; batches counted across epochs
        ("AdversarialTrainerMadryPGD", 1, [(i, i % 2 == 0) for i in range(6)]),
    ],
)
def test_mask_follows_the_training_batch_schedule(name: str, forwards_per_batch: int, expected) -> None:
    mask = ChannelMask(mode="paper", drop_frac=0.25, every=2, skip_first=False)
    ib, clf = _setup(beta=1.0, mask=mask)
    events, handle = _mask_events(ib, mask)
    _fit(name, clf, nb_epochs=2)
    handle.remove()
    assert _per_batch(events) == expected
    assert not any(masked for _, training, masked in events if not training)  # attack forwards: never
    assert any(not training for _, training, _ in events)  # (there were attack forwards)
    assert mask.num_masked == forwards_per_batch * sum(m for _, m in expected)
    assert clf.loss.num_ib_terms == 2 * NB_BATCHES
    ib.unwrap()
    assert all(not m._forward_hooks for m in ib.model.modules())


@pytest.mark.parametrize("name", ["IBAdversarialTrainerAWPPyTorch-PGD"])
def test_mask_works_in_awp_whose_proxy_copies_every_state_entry(name: str) -> None:
    # AWP calls .size() on every state_dict entry: the mask keeps its schedule state as a tensor.
    mask = ChannelMask(mode="paper", drop_frac=0.25, every=2, skip_first=False)
    ib, clf = _setup(beta=1.0, mask=mask)
    assert all(isinstance(v, torch.Tensor) for v in ib.state_dict().values())
    _fit(name, clf)
    assert mask.num_masked > 0
    ib.unwrap()


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
def test_loss_and_classifier_reject_a_plain_module() -> None:
    with pytest.raises(TypeError, match="expected an ib_plugins.IBModel"):
        at.IBCrossEntropyLoss(nn.Linear(2, 2))
    net = TinyNet()
    with pytest.raises(TypeError, match="expected an ib_plugins.IBModel"):
        at.make_art_classifier(net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1), input_shape=(1, 8, 8),
                               nb_classes=C)
    plain = PyTorchClassifier(net, nn.CrossEntropyLoss(), input_shape=(1, 8, 8), nb_classes=C,
                              optimizer=torch.optim.SGD(net.parameters(), lr=0.1), clip_values=(0, 1))
    with pytest.raises(TypeError, match="expected an ib_plugins.IBModel"):
        at.IBAdversarialTrainerTRADESPyTorch(plain, _pgd(plain), beta=1.0)


def test_bad_arguments() -> None:
    ib, clf = _setup()
    with pytest.raises(ValueError, match="ib_pass: expected 'trainer' or 'clean'"):
        at.IBCrossEntropyLoss(ib, ib_pass="adv")
    with pytest.raises(ValueError, match="x_for_ib"):
        at.IBCrossEntropyLoss(ib, x_for_ib="both")
    other, _ = _setup()
    with pytest.raises(ValueError, match="another IBModel"):
        at.make_art_classifier(ib, loss=at.IBCrossEntropyLoss(other), input_shape=(1, 8, 8), nb_classes=C,
                               optimizer=torch.optim.SGD(ib.parameters(), lr=0.1))
    stock = PyTorchClassifier(ib, at.IBCrossEntropyLoss(ib), input_shape=(1, 8, 8), nb_classes=C,
                              optimizer=torch.optim.SGD(ib.parameters(), lr=0.1), clip_values=(0, 1))
    with pytest.raises(TypeError, match="expected an IBPyTorchClassifier"):
        at.IBAdversarialTrainer(stock, _pgd(stock))
    with pytest.raises(ValueError, match="beta: expected a finite number >= 0"):
        at.AdversarialTrainerMARTPyTorch(clf, _pgd(clf), beta=-1.0)


@pytest.mark.parametrize(
    "name", ["AdversarialTrainerTRADESPyTorch", "IBAdversarialTrainerTRADESPyTorch", "IBAdversarialTrainerMadryPGD",
             "AdversarialTrainerMadryPGD"]
)
def test_unwrapped_model_fails_loudly_at_the_next_training_step(name: str) -> None:
    ib, clf = _setup(beta=1.0)
    trainer = TRAINERS[name](clf)
    ib.unwrap()
    x, y = _data()
    with pytest.raises(RuntimeError, match="unwrapped.*wrap_model"):
        trainer.fit(x, y, batch_size=BATCH, nb_epochs=1)
    # Evaluating the unwrapped model with ART attacks through the same classifier still works.
    x_adv = _pgd(clf).generate(x[:4], y=y[:4])
    assert x_adv.shape == (4, 1, 8, 8)


def test_untested_art_version_warns() -> None:
    with pytest.warns(at.UntestedARTVersionWarning, match="1.20.1"):
        assert at.check_art_version("1.19.2") is False
    assert at.check_art_version(at.TESTED_ART_VERSION) is True


def test_import_ib_plugins_does_not_import_art() -> None:
    code = "import sys, ib_plugins, ib_plugins.adapters; print('art' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Upstream code this adapter copies (an ART upgrade that changes it must fail here)
# ---------------------------------------------------------------------------------------------
def _art_original(fn):
    """ART's InputFilter metaclass wraps ``fit``; return the function it wraps."""
    if fn.__closure__ is None:
        return fn
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__))
    return cells["fdict"].cell_contents[fn.__name__.removeprefix("new_")] if "fdict" in cells else fn


UPSTREAM_SHA256 = {
    "AdversarialTrainerFBFPyTorch._batch_process": (
        lambda: AdversarialTrainerFBFPyTorch._batch_process,
        "281309517fefedc89a03357f1545c3d7cfd52d6c3e23666524a6e089acef0c42",
    ),
    "AdversarialTrainer.fit": (
        lambda: AdversarialTrainer.fit,
        "4fa99537f9cecade91705affe4360515225adc7622f15d7606efa4c3972d1401",
    ),
    "PyTorchClassifier.fit": (
        lambda: _art_original(PyTorchClassifier.fit),
        "846010dccb8990b9c0d16e077679f85f3e53e4b5788a70ab0b663cd7ed69573c",
    ),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_SHA256))
def test_upstream_sources_of_the_copied_code_are_unchanged(name: str) -> None:
    get, expected = UPSTREAM_SHA256[name]
    fn = get()
    assert fn.__qualname__ == name
    assert at.source_fingerprint(fn) == expected, (
        f"ART's {name} changed (ART {art.__version__}); re-check the adapted copy in "
        "ib_plugins/adapters/art_training.py against it, then update the fingerprint"
    )


# ---------------------------------------------------------------------------------------------
# The example
# ---------------------------------------------------------------------------------------------
def test_example_smoke() -> None:
    env = dict(os.environ, TQDM_DISABLE="1")
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "art_adversarial_training.py"), "--smoke"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "PGD accuracy" in out.stdout and "clean accuracy" in out.stdout
