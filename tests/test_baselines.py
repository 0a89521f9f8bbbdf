"""Tests for ib_plugins.baselines (HBaR, spec §3 / A15 / A16; VIB, spec §5 / A18)."""

from __future__ import annotations

import copy
import json
import math
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ib_plugins.baselines import (
    HBAR_SETTINGS,
    HBaR,
    HBaRSetting,
    MixupBatch,
    VIBClassifier,
    VIBHead,
    get_hbar_setting,
    hbar_vgg16_layers,
    mixup,
    mixup_cross_entropy,
    vib_kl,
    vib_loss,
    wrap_hbar,
)
from ib_plugins.bottleneck import HSICBottleneck, ib_objective, labels_to_targets
from ib_plugins.errors import IBPluginsError, NoTrainingForwardError
from ib_plugins.layer_selection import resolve_layers
from ib_plugins.wrap import IBModel


def _batch(m: int = 12, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(m, 3, 4, 4, generator=g)
    acts = [torch.relu(torch.randn(m, 8, 2, 2, generator=g)), torch.randn(m, 16, generator=g)]
    y = torch.arange(m) % classes
    return acts, x, y


# ============================================================================ HBaR
def test_hbar_defaults_are_cifar10_resnet18_hbar_high() -> None:
    h = HBaR()
    assert (h.lambda_x, h.lambda_y, h.sigma, h.eps) == (0.006, 0.05, 5.0, 1e-5)
    assert (h.alpha, h.beta) == (0.006, 0.05)
    assert h.y_kernel == "linear" and h.x_kernel == "gaussian" and h.t_kernel == "gaussian"
    assert h.center == "right" and h.bandwidth == "scaled"
    assert h.xw == 1.0 and h.mixup_alpha == 0.0
    assert isinstance(h, HSICBottleneck)


def test_hbar_equals_ib_objective_with_its_lambdas() -> None:
    acts, x, y = _batch()
    terms = HBaR(num_classes=4)(acts, x, y)
    ref = ib_objective(acts, x, labels_to_targets(y, 4), alpha=0.006, beta=0.05, sigma=5.0, y_kernel="linear")
    torch.testing.assert_close(terms.loss, ref.loss)
    torch.testing.assert_close(terms.hx, ref.hx)
    torch.testing.assert_close(terms.hy, ref.hy)
    # and, term by term, the definition lx*Σhx - ly*Σhy
    torch.testing.assert_close(terms.loss, 0.006 * ref.hx.sum() - 0.05 * ref.hy.sum())


def test_hbar_equals_hsic_bottleneck_with_same_weights() -> None:
    acts, x, y = _batch(seed=3)
    a = HBaR(lambda_x=0.003, lambda_y=0.001)(acts, x, y, num_classes=4)
    b = HSICBottleneck(alpha=0.003, beta=0.001, y_kernel="linear")(acts, x, y, num_classes=4)
    torch.testing.assert_close(a.loss, b.loss)


def test_hbar_gradient_flows_to_activations_only() -> None:
    acts, x, y = _batch()
    acts = [a.requires_grad_() for a in acts]
    x.requires_grad_()
    HBaR(num_classes=4)(acts, x, y).loss.backward()
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in acts)
    assert x.grad is None


SPEC_TABLE = {
    # name: (lambda_x, lambda_y, epochs, batch, lr, repo mixup alpha, adversarial)
    "cifar10-resnet18": (0.006, 0.05, 300, 128, 0.01, 0.3, False),
    "cifar10-resnet18-adv": (0.0005, 0.005, 83, 128, 0.01, 0.3, True),
    "mnist-lenet": (1.0, 50.0, 100, 256, 1e-4, 0.0, False),
    "mnist-lenet-adv": (0.003, 0.001, 100, 256, 1e-4, 0.0, True),
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_hbar_presets_have_the_spec_numbers(name: str) -> None:
    lx, ly, epochs, batch, lr, mix, adv = SPEC_TABLE[name]
    s = HBAR_SETTINGS[name]
    assert isinstance(s, HBaRSetting) and s.name == name
    assert (s.lambda_x, s.lambda_y, s.epochs, s.batch_size, s.lr) == (lx, ly, epochs, batch, lr)
    assert (s.repo_mixup_alpha, s.adversarial) == (mix, adv)
    assert s.sigma == 5.0 and s.y_kernel == "linear" and s.xw == 1.0
    assert "Adam" in s.optimizer
    assert ("Cosine" in s.schedule) == name.startswith("cifar10")
    assert (s.attack is not None) == adv
    assert get_hbar_setting(name) is s
    h = HBaR.from_preset(name)
    assert (h.lambda_x, h.lambda_y, h.sigma, h.y_kernel, h.mixup_alpha) == (lx, ly, 5.0, "linear", 0.0)
    assert HBaR.from_preset(name, repo_mixup=True).mixup_alpha == mix


def test_hbar_settings_are_read_only_and_exactly_the_published_ones() -> None:
    assert set(HBAR_SETTINGS) == set(SPEC_TABLE)
    with pytest.raises(TypeError):
        HBAR_SETTINGS["mine"] = HBAR_SETTINGS["mnist-lenet"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        HBAR_SETTINGS["mnist-lenet"].lambda_x = 2.0  # type: ignore[misc]


def test_from_preset_overrides_and_errors() -> None:
    h = HBaR.from_preset("mnist-lenet-adv", num_classes=10, mixup_alpha=1.0)
    assert (h.num_classes, h.mixup_alpha, h.lambda_x) == (10, 1.0, 0.003)
    with pytest.raises(ValueError, match="name: expected one of .*'mnist-lenet'.*got 'cifar100'"):
        HBaR.from_preset("cifar100")
    with pytest.raises(ValueError, match="name: expected one of"):
        get_hbar_setting("nope")
    with pytest.raises(ValueError, match="mixup_alpha: give either repo_mixup=True or mixup_alpha="):
        HBaR.from_preset("cifar10-resnet18", repo_mixup=True, mixup_alpha=0.2)
    with pytest.raises(TypeError):
        HBaR.from_preset("cifar10-resnet18", alpha=0.1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lambda_x": -1.0}, "lambda_x: expected a finite number >= 0, got -1.0"),
        ({"lambda_y": float("inf")}, "lambda_y: expected a finite number >= 0, got inf"),
        ({"xw": float("nan")}, "xw: expected a finite number >= 0"),
        ({"mixup_alpha": -0.1}, "mixup_alpha: expected a finite number >= 0, got -0.1"),
        ({"mixup_alpha": True}, "mixup_alpha: expected a finite number >= 0, got True"),
        ({"sigma": 0.0}, "sigma: expected a finite number > 0"),
        ({"y_kernel": "poly"}, "y_kernel: expected one of 'linear', 'gaussian', got 'poly'"),
        ({"num_classes": 1}, "num_classes: expected None or an int >= 2, got 1"),
    ],
)
def test_hbar_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HBaR(**kwargs)


def test_hbar_config_is_json_and_complete() -> None:
    cfg = HBaR.from_preset("cifar10-resnet18-adv", num_classes=10).config()
    json.dumps(cfg)
    assert cfg["method"] == "hbar"
    assert (cfg["lambda_x"], cfg["lambda_y"], cfg["alpha"], cfg["beta"]) == (0.0005, 0.005, 0.0005, 0.005)
    assert (cfg["xw"], cfg["mixup_alpha"], cfg["y_kernel"], cfg["num_classes"]) == (1.0, 0.0, "linear", 10)
    assert "lambda_x=0.0005" in repr(HBaR.from_preset("cifar10-resnet18-adv"))


def test_hbar_objective_is_xw_ce_plus_ib() -> None:
    acts, x, y = _batch()
    logits = torch.randn(12, 4)
    h = HBaR(xw=2.0)
    terms = h.objective(logits, acts, x, y)
    ib = h(acts, x, y, num_classes=4)
    torch.testing.assert_close(terms.ce, F.cross_entropy(logits, y))
    torch.testing.assert_close(terms.loss, 2.0 * F.cross_entropy(logits, y) + ib.loss)
    torch.testing.assert_close(terms.hx, ib.hx)


def test_hbar_objective_with_mixup_uses_unmixed_labels_for_hsic() -> None:
    acts, x, y = _batch()
    logits = torch.randn(12, 4)
    y_b = y.roll(1)
    h = HBaR()
    terms = h.objective(logits, acts, x, y, y_b=y_b, lam=0.3)
    ce = 0.3 * F.cross_entropy(logits, y) + 0.7 * F.cross_entropy(logits, y_b)
    torch.testing.assert_close(terms.ce, ce)
    torch.testing.assert_close(terms.loss, ce + h(acts, x, y, num_classes=4).loss)


def test_wrap_hbar_gives_an_ibmodel_with_hbar_loss() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 4))
    model = wrap_hbar(net, ["2"], hbar=HBaR(num_classes=4))
    assert isinstance(model, IBModel) and model.layers == ("2",)
    _, x, y = _batch()
    logits = model.train()(x)
    act = model.activations["2"]
    expected = HBaR(num_classes=4)([act], x, y).loss
    loss = model.ib_loss(x, y)
    torch.testing.assert_close(loss, expected)
    (F.cross_entropy(logits, y) + loss).backward()
    assert net[1].weight.grad is not None
    assert model.ib_config()["method"] == "hbar"
    with pytest.raises(TypeError, match="hbar: expected None or an HBaR, got HSICBottleneck"):
        wrap_hbar(net, ["2"], hbar=HSICBottleneck())  # type: ignore[arg-type]


def test_hbar_vgg16_layers_are_six_hbar_hooks_of_the_ibrar_layout() -> None:
    from ib_plugins.models.vgg import VGG16

    layers = hbar_vgg16_layers()
    assert layers == ["block1", "block2", "block3", "block4", "fc1", "fc2"]
    assert "block5" not in layers
    layers.append("x")
    assert len(hbar_vgg16_layers()) == 6  # a fresh list each call
    resolved = resolve_layers(VGG16(num_classes=10), hbar_vgg16_layers())
    assert list(resolved) == hbar_vgg16_layers()


# ============================================================================ mixup
def test_mixup_alpha_zero_returns_the_batch_unchanged() -> None:
    x, y = torch.rand(6, 3), torch.arange(6)
    g = torch.Generator().manual_seed(1)
    g_state = g.get_state()
    out = mixup(x, y, alpha=0.0, generator=g)
    assert isinstance(out, MixupBatch)
    assert out.x is x and out.y_a is y and out.y_b is y and out.lam == 1.0
    assert torch.equal(g.get_state(), g_state)  # nothing drawn
    assert mixup(x, y).lam == 1.0  # off by default


def test_mixup_is_a_convex_combination_with_a_permutation() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 3, 2, 2, generator=g)
    y = torch.arange(10)  # unique labels: y_b reveals the permutation
    xm, y_a, y_b, lam = mixup(x, y, alpha=0.3, generator=g)
    assert isinstance(lam, float) and 0.0 <= lam <= 1.0
    assert y_a is y
    assert torch.equal(y_b.sort().values, y)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[y_b])


def test_mixup_leaves_the_global_rng_untouched() -> None:
    x, y = torch.rand(8, 5), torch.arange(8) % 3
    state = torch.get_rng_state()
    g = torch.Generator().manual_seed(7)
    for alpha in (0.3, 1.0, 4.0):
        mixup(x, y, alpha=alpha, generator=g)
    assert torch.equal(torch.get_rng_state(), state)


def test_mixup_same_seed_same_result() -> None:
    x, y = torch.rand(8, 5), torch.arange(8)
    a = mixup(x, y, alpha=0.3, generator=torch.Generator().manual_seed(3))
    b = mixup(x, y, alpha=0.3, generator=torch.Generator().manual_seed(3))
    c = mixup(x, y, alpha=0.3, generator=torch.Generator().manual_seed(4))
    assert a.lam == b.lam and torch.equal(a.x, b.x) and torch.equal(a.y_b, b.y_b)
    assert c.lam != a.lam


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.0])
def test_mixup_lambda_follows_a_symmetric_beta(alpha: float) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = torch.zeros(2, 1), torch.arange(2)
    lams = torch.tensor([mixup(x, y, alpha=alpha, generator=g).lam for _ in range(4000)], dtype=torch.float64)
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Var Beta(a, a)
    assert abs(float(lams.mean()) - 0.5) < 0.03
    assert abs(float(lams.var()) - var) < 0.15 * var
    assert bool(((lams >= 0) & (lams <= 1)).all())


def test_mixup_with_soft_labels_and_float64() -> None:
    x = torch.rand(4, 3, dtype=torch.float64)
    y = torch.eye(4)
    xm, _, y_b, lam = mixup(x, y, alpha=1.0, generator=torch.Generator().manual_seed(0))
    assert xm.dtype == torch.float64 and y_b.shape == (4, 4)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"alpha": -1.0}, ValueError, "alpha: expected a finite number >= 0, got -1.0"),
        ({"alpha": float("nan")}, ValueError, "alpha: expected a finite number >= 0"),
        ({"alpha": True}, ValueError, "alpha: expected a finite number >= 0, got True"),
        ({"alpha": 0.3, "generator": 1}, TypeError, "generator: expected None or a torch.Generator, got int"),
    ],
)
def test_mixup_bad_arguments(kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        mixup(torch.rand(4, 2), torch.arange(4), **kwargs)


def test_mixup_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"y: expected the batch size of x \(4\), got 3"):
        mixup(torch.rand(4, 2), torch.arange(3), alpha=0.3)
    with pytest.raises(TypeError, match="x: expected a floating-point tensor"):
        mixup(torch.arange(4), torch.arange(4), alpha=0.3)


def test_hbar_mixup_uses_its_alpha() -> None:
    x, y = torch.rand(6, 2), torch.arange(6)
    a = HBaR(mixup_alpha=0.3).mixup(x, y, generator=torch.Generator().manual_seed(5))
    b = mixup(x, y, alpha=0.3, generator=torch.Generator().manual_seed(5))
    assert a.lam == b.lam and a.lam != 1.0


def test_mixup_cross_entropy() -> None:
    logits, y_a = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    y_b = y_a.roll(2)
    torch.testing.assert_close(
        mixup_cross_entropy(logits, y_a, y_b, 0.25),
        0.25 * F.cross_entropy(logits, y_a) + 0.75 * F.cross_entropy(logits, y_b),
    )


# ============================================================================ VIB: KL
def test_vib_kl_matches_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 4, generator=g, dtype=torch.float64)
    std = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1
    hand = torch.tensor(
        [
            -0.5 * sum(1 + 2 * math.log(s) - m * m - s * s for m, s in zip(mu[i].tolist(), std[i].tolist()))
            for i in range(3)
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(vib_kl(mu, std), hand)
    # independent oracle: the closed form of torch.distributions
    normal = torch.distributions.Normal
    oracle = torch.distributions.kl_divergence(normal(mu, std), normal(torch.zeros_like(mu), torch.ones_like(std)))
    torch.testing.assert_close(vib_kl(mu, std), oracle.sum(-1))


def test_vib_kl_is_zero_exactly_at_the_prior() -> None:
    mu, std = torch.zeros(2, 5), torch.ones(2, 5)
    assert torch.equal(vib_kl(mu, std), torch.zeros(2))
    for d_mu, d_std in ((0.1, 0.0), (0.0, 0.1), (0.0, -0.1), (-0.2, 0.3)):
        assert bool((vib_kl(mu + d_mu, std + d_std) > 0).all())


def test_vib_kl_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"std: expected the shape of mu \(2, 3\), got \(2, 4\)"):
        vib_kl(torch.zeros(2, 3), torch.ones(2, 4))
    with pytest.raises(TypeError, match="mu: expected a floating-point tensor"):
        vib_kl(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))


# ============================================================================ VIB: head
def test_vib_head_layout_and_output_shape() -> None:
    head = VIBHead(20, 7, k=5)
    assert head.encoder.in_features == 20 and head.encoder.out_features == 10
    assert head.classifier.in_features == 5 and head.classifier.out_features == 7
    assert (head.k, head.beta, head.eval_mode, head.num_samples_eval) == (5, 1e-3, "mean", 1)
    x = torch.randn(9, 20)
    assert head.train()(x).shape == (9, 7)
    assert head.eval()(x).shape == (9, 7)
    assert set(head.state_dict()) == {"encoder.weight", "encoder.bias", "classifier.weight", "classifier.bias"}


def test_vib_head_defaults_follow_alemi() -> None:
    head = VIBHead(4096, 10)
    assert head.k == 256 and head.beta == 1e-3
    mu, std = head.encode(torch.zeros(1, 4096))
    # zero input: s = bias; σ = softplus(s - 5)
    torch.testing.assert_close(std, F.softplus(head.encoder.bias[256:] - 5).unsqueeze(0))
    torch.testing.assert_close(mu, head.encoder.bias[:256].unsqueeze(0))


def test_vib_eval_forward_is_deterministic_and_classifies_mu() -> None:
    head = VIBHead(12, 4, k=6).eval()
    x = torch.randn(5, 12)
    a, b = head(x), head(x)
    assert torch.equal(a, b)
    mu, _ = head.encode(x)
    assert torch.equal(a, head.classifier(mu))
    assert head.last_kl is None  # eval forwards do not compute the KL


def test_vib_training_forward_is_stochastic_and_matches_reparameterisation() -> None:
    head = VIBHead(12, 4, k=6).train()
    with torch.no_grad():
        head.encoder.bias[6:] += 6.0  # σ ≈ 1, so the noise is visible
    x = torch.randn(5, 12)
    assert not torch.equal(head(x), head(x))
    g = torch.Generator().manual_seed(2)
    head.generator = g
    out = head(x)
    mu, std = head.encode(x)
    eps = torch.randn(5, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(out, head.classifier(mu + std * eps))


def test_vib_generator_makes_training_reproducible_and_spares_the_global_rng() -> None:
    a = VIBHead(8, 3, k=4, generator=torch.Generator().manual_seed(9))
    b = copy.deepcopy(a)
    b.generator = torch.Generator().manual_seed(9)
    x = torch.randn(4, 8)
    state = torch.get_rng_state()
    assert torch.equal(a.train()(x), b.train()(x))
    assert torch.equal(torch.get_rng_state(), state)


def test_vib_last_kl_matches_formula_and_needs_no_sync() -> None:
    head = VIBHead(10, 3, k=4).train()
    x = torch.randn(6, 10)
    head(x)
    mu, std = head.encode(x)
    assert isinstance(head.last_kl, torch.Tensor) and head.last_kl.dim() == 0
    assert head.last_kl.requires_grad
    torch.testing.assert_close(head.last_kl, vib_kl(mu, std).mean())
    torch.testing.assert_close(head.regularizer(), 1e-3 * head.last_kl)


def test_vib_head_kl_is_zero_when_the_code_is_the_prior() -> None:
    head = VIBHead(6, 3, k=4).train()
    with torch.no_grad():
        head.encoder.weight.zero_()
        head.encoder.bias[:4] = 0.0
        head.encoder.bias[4:] = 5.0 + math.log(math.e - 1.0)  # softplus(s - 5) = 1
    head(torch.randn(3, 6))
    mu, std = head.encode(torch.randn(3, 6))
    torch.testing.assert_close(std, torch.ones(3, 4))
    assert abs(float(head.last_kl.detach())) < 1e-6


def test_vib_regularizer_before_training_forward_raises() -> None:
    head = VIBHead(6, 3, k=2)
    with pytest.raises(RuntimeError, match="needs the KL of a training-mode forward"):
        head.regularizer()
    head.eval()(torch.randn(2, 6))
    with pytest.raises(NoTrainingForwardError, match=r"call \.train\(\) and run a forward first"):
        head.regularizer()
    assert issubclass(NoTrainingForwardError, IBPluginsError)
    with pytest.raises(RuntimeError, match="training-mode forward"):
        vib_loss(torch.randn(2, 3), torch.tensor([0, 1]), head)


def test_vib_gradient_flows_to_head_parameters_from_ce_and_kl() -> None:
    head = VIBHead(10, 3, k=4, beta=0.1).train()
    x, y = torch.randn(8, 10), torch.arange(8) % 3
    loss = vib_loss(head(x), y, head)
    loss.backward()
    for p in head.parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    # the KL term alone reaches the encoder (μ and σ halves), not the classifier
    head.zero_grad()
    head(x)
    head.regularizer().backward()
    assert bool(head.encoder.weight.grad[:4].abs().sum() > 0)
    assert bool(head.encoder.weight.grad[4:].abs().sum() > 0)
    assert head.classifier.weight.grad is None or bool((head.classifier.weight.grad == 0).all())


def test_vib_loss_is_ce_plus_beta_kl() -> None:
    head = VIBHead(10, 3, k=4, beta=0.25).train()
    x, y = torch.randn(8, 10), torch.arange(8) % 3
    logits = head(x)
    torch.testing.assert_close(vib_loss(logits, y, head), F.cross_entropy(logits, y) + 0.25 * head.last_kl)


def test_vib_sample_average_returns_log_probabilities() -> None:
    head = VIBHead(8, 5, k=4, eval_mode="sample_average", num_samples_eval=12).eval()
    with torch.no_grad():
        head.encoder.bias[4:] += 5.0
    x = torch.randn(6, 8)
    out = head(x)
    assert out.shape == (6, 5)
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(6))
    assert bool((out <= 0).all())
    assert not torch.equal(out, head(x))  # stochastic: attacks need EOT


def test_vib_sample_average_matches_the_definition_with_a_generator() -> None:
    head = VIBHead(8, 5, k=4, eval_mode="sample_average", num_samples_eval=3).eval()
    head.generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8)
    out = head(x)
    mu, std = head.encode(x)
    eps = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(4))
    probs = F.softmax(head.classifier(mu + std * eps), dim=-1).mean(0)
    torch.testing.assert_close(out, probs.log())


def test_vib_float64() -> None:
    head = VIBHead(6, 3, k=2).double().train()
    out = head(torch.randn(4, 6, dtype=torch.float64))
    assert out.dtype == torch.float64 and head.last_kl.dtype == torch.float64


@pytest.mark.parametrize(
    ("args", "kwargs", "err", "match"),
    [
        ((0, 3), {}, ValueError, "in_features: expected an int >= 1, got 0"),
        (("8", 3), {}, ValueError, "in_features: expected an int >= 1, got '8'"),
        ((8, 1), {}, ValueError, "num_classes: expected an int >= 2, got 1"),
        ((8, 3), {"k": 0}, ValueError, "k: expected an int >= 1, got 0"),
        ((8, 3), {"beta": -1e-3}, ValueError, "beta: expected a finite number >= 0, got -0.001"),
        ((8, 3), {"eval_mode": "median"}, ValueError, "eval_mode: expected one of 'mean', 'sample_average'"),
        (
            (8, 3),
            {"num_samples_eval": 0, "eval_mode": "sample_average"},
            ValueError,
            "num_samples_eval: expected an int >= 1, got 0",
        ),
        ((8, 3), {"num_samples_eval": 12}, ValueError, "num_samples_eval: only used with eval_mode='sample_average'"),
        ((8, 3), {"generator": 0}, TypeError, "generator: expected None or a torch.Generator, got int"),
    ],
)
def test_vib_head_bad_arguments(args: tuple, kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        VIBHead(*args, **kwargs)


def test_vib_head_bad_input_shape() -> None:
    with pytest.raises(ValueError, match=r"x: expected features of shape \[batch, in_features=8\], got \(2, 7\)"):
        VIBHead(8, 3, k=2)(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"in_features=8\], got \(2, 2, 4\)"):
        VIBHead(8, 3, k=2)(torch.randn(2, 2, 4))


def test_vib_head_deepcopy_and_pickle_after_training_forward() -> None:
    head = VIBHead(6, 3, k=2, generator=torch.Generator().manual_seed(0)).train()
    head(torch.randn(4, 6))
    assert head.last_kl is not None
    clone = copy.deepcopy(head)
    assert clone.last_kl is None and head.last_kl is not None
    assert torch.equal(clone.encoder.weight, head.encoder.weight)
    restored = pickle.loads(pickle.dumps(head))
    assert restored.last_kl is None
    json.dumps(head.config())


# ============================================================================ VIB: classifier
def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))


def test_vib_classifier_forward_and_loss() -> None:
    model = VIBClassifier(_cnn(), 16, 5, k=3, beta=0.01)
    x, y = torch.rand(6, 3, 8, 8), torch.arange(6) % 5
    logits = model.train()(x)
    assert logits.shape == (6, 5)
    loss = vib_loss(logits, y, model)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + 0.01 * model.last_kl)
    torch.testing.assert_close(model.regularizer(), model.head.regularizer())
    loss.backward()
    assert model.backbone[0].weight.grad is not None
    ev = model.eval()
    assert torch.equal(ev(x), ev(x))


def test_vib_classifier_feature_dim_mismatch_and_bad_backbone() -> None:
    msg = "feature_dim: the backbone returns 16 features per sample, but feature_dim=10"
    with pytest.raises(ValueError, match=msg):
        VIBClassifier(_cnn(), 10, 5)(torch.rand(2, 3, 8, 8))
    with pytest.raises(TypeError, match="backbone: expected a torch.nn.Module, got function"):
        VIBClassifier(lambda t: t, 4, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k: expected an int >= 1"):
        VIBClassifier(_cnn(), 16, 5, k=-1)


def test_vib_loss_finds_the_head_inside_any_module() -> None:
    model = VIBClassifier(nn.Identity(), 4, 2, k=2)
    wrapper = nn.Sequential(model)
    x, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    logits = wrapper.train()(x)
    torch.testing.assert_close(vib_loss(logits, y, wrapper), vib_loss(logits, y, model))
    with pytest.raises(TypeError, match="model_or_head: expected a VIBHead or a module containing one, got a Linear"):
        vib_loss(logits, y, nn.Linear(2, 2))
    with pytest.raises(TypeError, match="model_or_head: expected a VIBHead or a module containing one, got str"):
        vib_loss(logits, y, "head")  # type: ignore[arg-type]


def test_vib_on_ibrar_vgg16_fc2_features() -> None:
    from ib_plugins.models.vgg import VGG16

    vgg = VGG16(num_classes=10)
    vgg.classifier = nn.Identity()
    model = VIBClassifier(vgg, 4096, 10).eval()
    assert (model.head.k, model.head.beta) == (256, 1e-3)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
