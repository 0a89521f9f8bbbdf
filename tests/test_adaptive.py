"""Adaptive attacks (ib_plugins.adaptive): pgd-ib / pgd-entropic through the defence, EOT, the corrected CW."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn

from ib_plugins import wrap_model
from ib_plugins.adaptive import (
    EOTModel,
    IBAttackConfig,
    MissingAttackConfigError,
    adaptive_spec,
    evaluate_specs,
    is_adaptive_spec,
    is_deterministic,
    list_adaptive_attacks,
    load_attack_target,
    margin_loss,
    resolve_entropic_config,
    resolve_ib_config,
    run_adaptive_attack,
    run_spec,
)
from ib_plugins.errors import UnknownLayerError
from ib_plugins.evaluation import AttackSpec, SuiteResult, build_suite, evaluate_suite, run_attack

pytest.importorskip("torchattacks", reason="the adaptive attacks are compared with torchattacks' attacks")

#: Tolerance of "pgd-ib is at least as strong as plain PGD" (absolute robust accuracy).
PGD_IB_TOL = 0.03


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)


def _net(num_classes: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(),
                         nn.Linear(12, num_classes))


def _data(n: int = 12, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % classes


# -- names and specs ---------------------------------------------------------------------------------


def test_names_and_specs_are_attackspec_compatible():
    assert list_adaptive_attacks() == ["pgd-ce", "pgd-margin", "pgd-ib", "pgd-entropic", "cw-l2"]
    spec = adaptive_spec("pgd-ib", eps=0.1, steps=5, restarts=2)
    assert isinstance(spec, AttackSpec) and is_adaptive_spec(spec)
    assert (spec.name, spec.norm, spec.eps, spec.attack) == ("pgd-ib", "linf", 0.1, "adaptive:pgd-ib")
    assert spec.to_dict()["kwargs"] == {"steps": 5, "restarts": 2}
    assert adaptive_spec("cw-l2", steps=3).eps is None
    assert not is_adaptive_spec(build_suite("ibrar", dataset="digits", attacks=["pgd"])[0])


def test_spec_errors():
    with pytest.raises(ValueError, match="cw-l2 is an unbounded attack, expected eps=None"):
        adaptive_spec("cw-l2", eps=0.1)
    with pytest.raises(ValueError, match="pgd-ce needs an L-inf radius"):
        adaptive_spec("pgd-ce")
    with pytest.raises(ValueError, match="expected keywords of run_adaptive_attack"):
        adaptive_spec("pgd-ce", eps=0.1, stepz=3)
    with pytest.raises(ValueError, match="expected one of 'pgd-ce'"):
        adaptive_spec("pgd-foo", eps=0.1)


# -- the rules of evaluation.run_attack ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["pgd-ce", "pgd-margin", "pgd-ib", "cw-l2"])
def test_attack_has_no_side_effects_and_respects_the_budget(name):
    net = _net()
    model = wrap_model(net, ib_layers=["2", "4"], num_classes=3)
    model.train()
    net[1].eval()  # a mixed state must come back as it was
    modes = [m.training for m in model.modules()]
    x, y = _data()
    state = torch.get_rng_state()
    eps = None if name == "cw-l2" else 0.1
    adv = run_adaptive_attack(model, name, x, y, eps=eps, steps=4, c=5.0, lr=0.05)
    assert torch.equal(state, torch.get_rng_state())
    assert [m.training for m in model.modules()] == modes
    assert model.num_records == 0  # IBModel recorded nothing during the attack
    assert all(p.grad is None for p in model.parameters())
    assert model.has_hooks and len(net[2]._forward_hooks) == 1  # only the IBModel's own capture hook is left
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    if eps is not None:
        assert float((adv - x).abs().max()) <= eps + 1e-6


def test_same_seed_same_examples_and_seed_matters():
    net, (x, y) = _net(), _data()
    a = run_adaptive_attack(net, "pgd-ce", x, y, eps=0.2, steps=3, seed=5)
    b = run_adaptive_attack(net, "pgd-ce", x, y, eps=0.2, steps=3, seed=5)
    c = run_adaptive_attack(net, "pgd-ce", x, y, eps=0.2, steps=3, seed=6)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_inputs_raise_like_run_attack():
    net, (x, y) = _net(), _data()
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\]"):
        run_adaptive_attack(net, "pgd-ce", x * 2, y, eps=0.1)
    with pytest.raises(ValueError, match="y: expected class indices < 3"):
        run_adaptive_attack(net, "pgd-ce", x, y + 3, eps=0.1)
    with pytest.raises(ValueError, match="eps: pgd-ce needs an L-inf radius"):
        run_adaptive_attack(net, "pgd-ce", x, y)
    with pytest.raises(ValueError, match="eps: cw-l2 is an unbounded L2 attack"):
        run_adaptive_attack(net, "cw-l2", x, y, eps=0.1)
    with pytest.raises(ValueError, match=r"eps: expected an L-inf radius in \[0, 1\]"):
        run_adaptive_attack(net, "pgd-ce", x, y, eps=2.0)
    with pytest.raises(ValueError, match="steps: expected an int >= 1"):
        run_adaptive_attack(net, "pgd-ce", x, y, eps=0.1, steps=0)
    with pytest.raises(ValueError, match="entropic_penalty: expected 'subtract' or 'add'"):
        run_adaptive_attack(net, "pgd-ce", x, y, eps=0.1, entropic_penalty="both")


# -- pgd-ib --------------------------------------------------------------------------------------------


def test_pgd_ib_without_ib_configuration_names_what_is_missing():
    net, (x, y) = _net(), _data()
    with pytest.raises(MissingAttackConfigError, match=r"IB configuration \(layers, alpha, beta\).*plain Sequential"):
        run_adaptive_attack(net, "pgd-ib", x, y, eps=0.1)
    with pytest.raises(MissingAttackConfigError, match=r"missing \['alpha', 'beta'\]"):
        run_adaptive_attack(net, "pgd-ib", x, y, eps=0.1, ib_config={"layers": ["2"]})
    from ib_plugins.training import TrainConfig

    with pytest.raises(MissingAttackConfigError, match="trained without the IB term: ib=False"):
        resolve_ib_config(net, TrainConfig(ib=False))
    with pytest.raises(UnknownLayerError):
        run_adaptive_attack(net, "pgd-ib", x, y, eps=0.1, ib_config={"layers": ["nope"], "alpha": 0.1, "beta": 0.1})


def test_ib_configuration_comes_from_the_model_or_its_train_config():
    from ib_plugins.models import create_model
    from ib_plugins.training import TrainConfig

    net = _net()
    wrapped = wrap_model(net, ib_layers=["4"], alpha=0.01, beta=0.2, num_classes=3, y_kernel="gaussian")
    cfg = resolve_ib_config(wrapped)
    assert (cfg.layers, cfg.alpha, cfg.beta, cfg.y_kernel) == (("4",), 0.01, 0.2, "gaussian")
    assert resolve_ib_config(net, wrapped.ib_config()) == cfg  # the ib_config() dict of the wrapper
    digits = create_model("digits-cnn", num_classes=10, in_channels=1)
    from_train = resolve_ib_config(digits, TrainConfig(ib=True, ib_layers="robust", mask="code", alpha=0.02))
    assert (from_train.layers, from_train.alpha, from_train.y_kernel) == (("conv3", "fc1"), 0.02, "linear")
    hbar = resolve_ib_config(digits, TrainConfig(method="hbar"))
    assert hbar.layers == ("conv1", "conv2", "conv3", "fc1") and hbar.y_kernel == "linear"


def test_pgd_ib_with_zero_weights_is_plain_pgd_and_the_terms_change_the_attack():
    net, (x, y) = _net(), _data()
    zero = {"layers": ["2", "4"], "alpha": 0.0, "beta": 0.0}
    a = run_adaptive_attack(net, "pgd-ib", x, y, eps=0.2, steps=4, ib_config=zero)
    b = run_adaptive_attack(net, "pgd-ce", x, y, eps=0.2, steps=4)
    assert torch.equal(a, b)
    strong = {"layers": ["2", "4"], "alpha": 5.0, "beta": 5.0}
    c = run_adaptive_attack(net, "pgd-ib", x, y, eps=0.2, steps=4, ib_config=strong)
    assert not torch.equal(a, c)


def test_pgd_ib_merges_a_last_batch_of_one():
    net, (x, y) = _net(), _data(n=5)
    model = wrap_model(net, ib_layers=["2"], num_classes=3)
    adv = run_adaptive_attack(model, "pgd-ib", x, y, eps=0.1, steps=2, batch_size=2)  # 2 + 3, not 2 + 2 + 1
    assert adv.shape == x.shape
    with pytest.raises(ValueError, match="need at least 2 samples"):
        run_adaptive_attack(model, "pgd-ib", x[:1], y[:1], eps=0.1)


# -- pgd-entropic --------------------------------------------------------------------------------------


def test_pgd_entropic_needs_its_configuration_and_both_directions_run():
    net, (x, y) = _net(), _data()
    with pytest.raises(MissingAttackConfigError, match="entropic-retraining configuration"):
        run_adaptive_attack(net, "pgd-entropic", x, y, eps=0.1)
    with pytest.raises(MissingAttackConfigError, match=r"missing \['reference'\]"):
        resolve_entropic_config(net, {"layers": ["2"]})
    cfg = {"layers": ["2", "4"], "reference": 0.5, "lam": 1.0, "sigma": 1.65}
    stay = run_adaptive_attack(net, "pgd-entropic", x, y, eps=0.1, steps=3, entropic_config=cfg)
    leave = run_adaptive_attack(net, "pgd-entropic", x, y, eps=0.1, steps=3, entropic_config=cfg,
                                entropic_penalty="add")
    assert float((stay - x).abs().max()) <= 0.1 + 1e-6
    assert not torch.equal(stay, leave)


# -- CW with the corrected margin ----------------------------------------------------------------------


def test_margin_masks_the_true_class():
    logp = torch.log_softmax(torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]), dim=1)
    y = torch.tensor([0, 0])
    torch.testing.assert_close(margin_loss(logp, y), torch.tensor([-2.0, 2.0]))


def test_corrected_cw_breaks_a_log_softmax_model_where_torchattacks_cw_stalls():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.LogSoftmax(dim=1)).eval()
    x = torch.rand(30, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = net(x).argmax(1)  # every sample starts correctly classified
    spec = AttackSpec("cw", "l2", None, {"c": 10.0, "kappa": 0, "steps": 100, "lr": 0.05})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # run_attack warns about exactly this bug
        adv_ta = run_attack(net, spec, x, y, progress=False)
    adv_fixed = run_adaptive_attack(net, "cw-l2", x, y, steps=100, c=10.0, lr=0.05)
    with torch.no_grad():
        ta_success = float((net(adv_ta).argmax(1) != y).float().mean())
        fixed_success = float((net(adv_fixed).argmax(1) != y).float().mean())
    assert ta_success <= 0.1 and fixed_success >= 0.9


# -- EOT and stochastic models -------------------------------------------------------------------------


def _stochastic_model():
    from ib_plugins.baselines import VIBClassifier

    torch.manual_seed(0)
    return VIBClassifier(nn.Flatten(), 16, 3, k=4, eval_mode="sample_average", num_samples_eval=2)


def test_eot_model_and_determinism():
    model, net, (x, y) = _stochastic_model(), _net(), _data()
    state = torch.get_rng_state()
    assert not is_deterministic(model, x)
    assert is_deterministic(net, x)
    assert torch.equal(state, torch.get_rng_state())
    eot = EOTModel(model, eot_samples=4)
    assert eot.eval()(x).shape == (12, 3)
    with pytest.raises(ValueError, match="eot_samples: expected an int >= 1"):
        EOTModel(model, eot_samples=0)
    # an EOT attack on a stochastic model is reproducible from its seed
    a = run_adaptive_attack(model, "pgd-ce", x, y, eps=0.1, steps=2, eot_samples=3, seed=1)
    b = run_adaptive_attack(model, "pgd-ce", x, y, eps=0.1, steps=2, eot_samples=3, seed=1)
    assert torch.equal(a, b)
    # torchattacks runs on the EOT wrapper too
    adv = run_attack(EOTModel(model, eot_samples=2), AttackSpec("fgsm", "linf", 0.1), x, y, progress=False)
    assert adv.shape == x.shape


# -- specs in suites -----------------------------------------------------------------------------------


def test_evaluate_specs_mixes_torchattacks_and_adaptive_specs():
    net, (x, y) = _net(), _data()
    model = wrap_model(net, ib_layers=["2"], num_classes=3)
    specs = [AttackSpec("fgsm", "linf", 0.1), adaptive_spec("pgd-ib", eps=0.1, steps=2),
             adaptive_spec("cw-l2", steps=5, label="cw-fixed")]
    res = evaluate_specs(model, x, y, specs)
    assert isinstance(res, SuiteResult) and [r.name for r in res.attacks] == ["fgsm", "pgd-ib", "cw-fixed"]
    torch_res = evaluate_suite(model, x, y, specs[:1], progress=False)
    assert res["fgsm"].accuracy == torch_res["fgsm"].accuracy
    assert run_spec(model, specs[1], x, y).shape == x.shape
    with pytest.raises(ValueError, match="duplicates"):
        evaluate_specs(model, x, y, [specs[0], specs[0]])


# -- checkpoints ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ibrar_checkpoint(tmp_path_factory):
    """An IB-RAR digits model trained like the demo (robust layers + code mask), briefly."""
    from ib_plugins.training import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("ibrar")
    cfg = TrainConfig(ib=True, ib_layers="robust", mask="code", epochs=6, batch_size=50, train_limit=600, seed=0)
    Trainer(cfg, out_dir=out, progress=False).fit()
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def ce_checkpoint(tmp_path_factory):
    from ib_plugins.training import TrainConfig, Trainer

    out = tmp_path_factory.mktemp("ce")
    Trainer(TrainConfig(epochs=1, batch_size=50, train_limit=100, seed=0), out_dir=out, progress=False).fit()
    return out / "checkpoint.pt"


@pytest.mark.slow
def test_load_attack_target_reads_the_ib_configuration(ibrar_checkpoint, ce_checkpoint):
    target = load_attack_target(ibrar_checkpoint)
    assert isinstance(target.ib_config, IBAttackConfig)
    assert target.ib_config.layers == ("conv3", "fc1")
    assert (target.ib_config.alpha, target.ib_config.beta, target.ib_config.y_kernel) == (0.008, 0.08, "linear")
    assert type(target.model).__name__ == "DigitsCNN"  # the plain network
    ce = load_attack_target(ce_checkpoint)
    assert ce.ib_config is None and ce.entropic_config is None
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    with pytest.raises(MissingAttackConfigError, match="plain DigitsCNN"):
        run_adaptive_attack(ce.model, "pgd-ib", x, y, eps=0.1, ib_config=ce.ib_config)


@pytest.mark.slow
def test_load_attack_target_reads_the_entropic_configuration(ce_checkpoint, tmp_path):
    from ib_plugins.training import TrainConfig, Trainer

    cfg = TrainConfig(method="entropic", init_checkpoint=str(ce_checkpoint), epochs=1, batch_size=50, train_limit=100)
    Trainer(cfg, out_dir=tmp_path, progress=False).fit()
    target = load_attack_target(tmp_path / "checkpoint.pt")
    assert target.ib_config is None
    ent = target.entropic_config
    assert ent is not None and ent.layers == ("conv1", "conv2", "conv3", "fc1")
    assert (ent.lam, ent.sigma) == (1.0, 1.65) and isinstance(ent.reference, float)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6)
    adv = run_adaptive_attack(target.model, "pgd-entropic", x, y, eps=0.1, steps=2, entropic_config=ent)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6


@pytest.mark.slow
def test_pgd_ib_is_at_least_as_strong_as_plain_pgd_on_an_ibrar_model(ibrar_checkpoint):
    """pgd-ib robust accuracy <= plain PGD's + PGD_IB_TOL (3 points), same eps/steps/step size/seed."""
    from ib_plugins.data import load_dataset

    target = load_attack_target(ibrar_checkpoint)
    x, y = load_dataset("digits", split="test", limit=200, seed=0).tensors
    steps, eps = 10, 0.1
    alpha = 2.3 * eps / steps  # the IB-RAR code's step rule, as build_suite's "pgd"
    specs = [
        build_suite("ibrar", dataset="digits", attacks=["pgd"])[0],  # torchattacks PGD, eps 0.1, 10 steps
        adaptive_spec("pgd-ce", eps=eps, steps=steps, alpha=alpha),
        adaptive_spec("pgd-ib", eps=eps, steps=steps, alpha=alpha),
        adaptive_spec("pgd-ib", eps=eps, steps=steps, alpha=alpha, ce_reduction="mean", label="pgd-ib-mean"),
    ]
    res = evaluate_specs(target.model, x, y, specs, ib_config=target.ib_config)
    pgd_ib = res["pgd-ib"].accuracy
    assert res.clean_accuracy > 0.8
    assert pgd_ib <= res["pgd"].accuracy + PGD_IB_TOL, res.to_markdown()
    assert pgd_ib <= res["pgd-ce"].accuracy + PGD_IB_TOL, res.to_markdown()
    assert 0.0 <= res["pgd-ib-mean"].accuracy <= 1.0  # the pgd_mi weighting runs too (it may be weaker)
