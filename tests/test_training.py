"""Tests of the training engine (`ib_plugins.training`): loss composition per method against the
spec's §2.5 / §3 / §4 / §5 pseudo-code, preset resolution (§2.3, A6-A8, A11), the channel-mask
schedule, checkpoints and exact resume, and clear errors on bad input.

Every loss check recomputes the expected value independently: the activations come from
:func:`ib_plugins.capture_activations` on a separate train-mode forward with the same weights
(train-mode BatchNorm uses batch statistics, so the forward is reproducible), the HSIC terms from
:func:`ib_plugins.nhsic`, and the task losses from hand-written formulas. The IB weights are raised
(α = 0.05, β = 0.5) so that a wrong sign, kernel, pass or X would change the loss far beyond the
tolerance. Everything runs on the CPU with scikit-learn's 8×8 digits and the small DigitsCNN.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _models import Interrupt, interrupt_after

from ib_plugins import UnknownLayerError, capture_activations, get_preset, nhsic
from ib_plugins.data import load_dataset
from ib_plugins.training import (
    METHODS,
    PRESETS,
    CheckpointError,
    RunExistsError,
    TrainConfig,
    Trainer,
    batch_loss,
    build_model,
    kl_pgd,
    load_checkpoint,
    load_model_from_checkpoint,
    mart_loss,
    resolve_config,
    trades_loss,
)

NUM_CLASSES = 10
ROBUST = ["conv3", "fc1"]  # DigitsCNN's robust layers (the "robust" layer spec)
ALPHA, BETA = 0.05, 0.5  # larger than the authors' 0.008 / 0.08 so every IB term is visible
RTOL, ATOL = 1e-4, 1e-5


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """20 training digits, two per class (a seeded stratified subset)."""
    x, y = load_dataset("digits", split="train", limit=20, seed=0).tensors
    return x, y


def _attack(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A deterministic, sample-dependent stand-in for PGD (so the test does not depend on PGD)."""
    return (x + 0.2 * torch.sin(7.0 * x + y.view(-1, 1, 1, 1).float())).clamp(0, 1).detach()


def _forward(base: torch.nn.Module, x: torch.Tensor, layers: list[str]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Independent train-mode forward of the plain network: (logits, activations of ``layers``)."""
    base.train()
    with torch.no_grad(), capture_activations(base, layers, when="always", detach=True) as cap:
        logits = base(x)
    return logits, [cap.activations[name] for name in layers]


def _ib(acts: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, alpha: float, beta: float, y_kernel: str):
    """Spec §2.5 ``IB(T_list, Xc, Y, ky) = Σ_T [α·nHSIC(T, Xc) − β·nHSIC(T, Y; ky)]`` and its parts."""
    xf = x.reshape(x.shape[0], -1)
    onehot = F.one_hot(y, NUM_CLASSES).float()
    hx = torch.stack([nhsic(t.reshape(t.shape[0], -1), xf) for t in acts])
    hy = torch.stack([nhsic(t.reshape(t.shape[0], -1), onehot, kernel_b=y_kernel) for t in acts])
    return alpha * hx.sum() - beta * hy.sum(), hx.sum(), hy.sum()


def _kl_batchmean(logits_clean: torch.Tensor, logits_adv: torch.Tensor) -> torch.Tensor:
    """``KL(p_clean || p_adv)`` summed over classes, averaged over the batch (KLDivLoss batchmean)."""
    p = F.softmax(logits_clean, dim=1)
    return (p * (F.log_softmax(logits_clean, dim=1) - F.log_softmax(logits_adv, dim=1))).sum() / logits_clean.shape[0]


def _official_mart(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """MART (Wang et al. 2020, official code) written out independently of ``mart_loss``."""
    b = y.shape[0]
    p_adv = F.softmax(logits_adv, dim=1)
    masked = p_adv.clone()
    masked[torch.arange(b), y] = -1.0
    y_wrong = masked.argmax(dim=1)  # the most likely wrong class under the adversarial output
    boosted_ce = F.cross_entropy(logits_adv, y) - torch.log(1.0001 - p_adv[torch.arange(b), y_wrong] + 1e-12).mean()
    p_nat = F.softmax(logits_clean, dim=1)
    kl = (p_nat * (torch.log(p_nat) - torch.log(p_adv + 1e-12))).sum(dim=1)
    robust = (kl * (1.0000001 - p_nat[torch.arange(b), y])).sum() / b
    return boosted_ce + beta * robust


def _close(a: torch.Tensor | float, b: torch.Tensor | float, *, rtol: float = RTOL, atol: float = ATOL) -> bool:
    fa, fb = float(torch.as_tensor(a).detach()), float(torch.as_tensor(b).detach())
    return math.isclose(fa, fb, rel_tol=rtol, abs_tol=atol)


def _tiny(**overrides: object) -> TrainConfig:
    """A seconds-long digits run."""
    base = {"epochs": 1, "train_limit": 100, "test_limit": 40, "batch_size": 25}
    base.update(overrides)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _ckpt_tensors(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# ---------------------------------------------------------------------------------------------
# Loss composition per method (spec §2.5, §3, §4, §5)
# ---------------------------------------------------------------------------------------------
def test_ce_ib_loss_is_ce_plus_alpha_hx_minus_beta_hy_with_gaussian_y(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="ce", ib=True, alpha=ALPHA, beta=BETA))
    assert cfg.y_kernel == "gaussian"  # train_miloss.py: CE+IB without mask
    model, base = build_model(cfg)
    assert model.layers == tuple(ROBUST)
    model.train()
    out = batch_loss(cfg, model, x, y)

    logits, acts = _forward(base, x, ROBUST)
    ce = F.cross_entropy(logits, y)
    ib, hx, hy = _ib(acts, x, y, alpha=ALPHA, beta=BETA, y_kernel="gaussian")
    assert torch.allclose(out.logits, logits, atol=1e-6)
    assert _close(out.parts["task"], ce)
    assert _close(out.parts["hx"], hx) and _close(out.parts["hy"], hy)
    assert _close(out.parts["ib"], ib)
    assert _close(out.loss, ce + ib)
    # The test discriminates: a linear Y kernel would give a different loss.
    ib_linear, _, _ = _ib(acts, x, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert not _close(ib_linear, ib, rtol=1e-3)
    # Gradients reach the regularised layers.
    out.loss.backward()
    assert base.conv3[0].weight.grad is not None and base.conv3[0].weight.grad.abs().sum() > 0


def test_ce_ib_with_mask_uses_linear_y_kernel(digits_batch):
    """train_miloss_fc.py (CE+IB with mask): linear Y; batch 0 of an epoch is never masked."""
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="ce", ib=True, mask="code", alpha=ALPHA, beta=BETA))
    assert cfg.y_kernel == "linear"
    model, base = build_model(cfg)
    model.train()
    model.start_epoch()
    out = batch_loss(cfg, model, x, y)
    assert model.mask.num_masked == 0
    logits, acts = _forward(base, x, ROBUST)
    ib, hx, hy = _ib(acts, x, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert _close(out.parts["hy"], hy) and _close(out.parts["hx"], hx)
    assert _close(out.loss, F.cross_entropy(logits, y) + ib)


def test_plain_ce_has_no_ib_parts(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="ce"))
    model, base = build_model(cfg)
    assert model is base  # no wrapper without IB or mask
    out = batch_loss(cfg, model.train(), x, y)
    assert sorted(out.parts) == ["task"]
    logits, _ = _forward(base, x, ROBUST)
    assert _close(out.loss, F.cross_entropy(logits, y))


def test_pgd_at_ib_regularises_the_adversarial_forward_with_clean_x(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="pgd-at", ib=True, ib_layers="robust", alpha=ALPHA, beta=BETA))
    assert (cfg.y_kernel, cfg.ib_on, cfg.x_for_ib) == ("linear", "adv", "clean")
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, attack=_attack)

    x_adv = _attack(x, y)
    logits_adv, acts_adv = _forward(base, x_adv, ROBUST)
    ib, hx, hy = _ib(acts_adv, x, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert torch.allclose(out.logits, logits_adv, atol=1e-6)  # accuracy is measured on the adversarial output
    assert _close(out.parts["task"], F.cross_entropy(logits_adv, y))
    assert _close(out.parts["hx"], hx) and _close(out.parts["hy"], hy)
    assert _close(out.loss, F.cross_entropy(logits_adv, y) + ib)
    # Discrimination: X = x_adv, or T from a clean pass, would give other values.
    _, hx_adv_x, _ = _ib(acts_adv, x_adv, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    _, clean_acts = _forward(base, x, ROBUST)
    _, hx_clean_t, _ = _ib(clean_acts, x, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert not _close(hx_adv_x, hx)
    assert not _close(hx_clean_t, hx)


def test_pgd_at_without_ib_and_x_for_ib_adv(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="pgd-at"))
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, attack=_attack)
    logits_adv, _ = _forward(base, _attack(x, y), ROBUST)
    assert sorted(out.parts) == ["task"]
    assert _close(out.loss, F.cross_entropy(logits_adv, y))

    cfg = resolve_config(TrainConfig(method="pgd-at", ib=True, ib_layers="robust", x_for_ib="adv", alpha=ALPHA, beta=BETA))
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, attack=_attack)
    x_adv = _attack(x, y)
    logits_adv, acts_adv = _forward(base, x_adv, ROBUST)
    ib, _, _ = _ib(acts_adv, x_adv, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert _close(out.loss, F.cross_entropy(logits_adv, y) + ib)


@pytest.mark.parametrize("method", ["pgd-at", "trades", "mart"])
def test_at_methods_need_an_attack(digits_batch, method):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method=method))
    model, _ = build_model(cfg)
    with pytest.raises(ValueError, match="attack: method .* needs a training attack, got None"):
        batch_loss(cfg, model.train(), x, y)


def test_trades_ibrar_is_ce_adv_plus_half_kl_plus_ib_on_both_passes(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="trades", ib=True, ib_layers="robust", alpha=ALPHA, beta=BETA))
    assert (cfg.variant, cfg.trades_beta, cfg.y_kernel, cfg.ib_on) == ("ibrar", 0.5, "gaussian", "both")
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, attack=_attack)

    x_adv = _attack(x, y)
    logits_c, acts_c = _forward(base, x, ROBUST)
    logits_a, acts_a = _forward(base, x_adv, ROBUST)
    task = F.cross_entropy(logits_a, y) + 0.5 * _kl_batchmean(logits_c, logits_a)
    ib_c, hx_c, hy_c = _ib(acts_c, x, y, alpha=ALPHA, beta=BETA, y_kernel="gaussian")
    ib_a, hx_a, hy_a = _ib(acts_a, x, y, alpha=ALPHA, beta=BETA, y_kernel="gaussian")
    assert torch.allclose(out.logits, logits_a, atol=1e-6)
    assert _close(out.parts["task"], task)
    assert _close(out.parts["hx"], hx_c + hx_a) and _close(out.parts["hy"], hy_c + hy_a)
    assert _close(out.loss, task + ib_c + ib_a)
    assert model.num_records == 0  # both records consumed or cleared


def _kl_pgd_reference(model, x, *, eps, alpha, steps):
    """Standard TRADES' attack as in the official code (Zhang et al.): KL-maximising L∞ PGD from
    x + 0.001·N(0, 1), in eval mode, with ``KLDivLoss(size_average=False)`` (the same KL formula as the
    official code, so that sign() of near-zero gradient entries cannot flip through rounding)."""
    model.eval()
    with torch.no_grad():
        p_natural = F.softmax(model(x), dim=1)
    x_adv = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        kl = torch.nn.KLDivLoss(reduction="sum")(F.log_softmax(model(x_adv), dim=1), p_natural)
        (grad,) = torch.autograd.grad(kl, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    return x_adv.detach()


def test_trades_standard_is_ce_clean_plus_six_kl_with_kl_pgd(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="trades", preset="standard", pgd_steps=3))
    assert (cfg.variant, cfg.trades_beta) == ("standard", 6.0)
    assert math.isclose(cfg.pgd_alpha, cfg.eps * 0.007 / 0.031)
    model, base = build_model(cfg)
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def must_not_be_called(*_args):
        raise AssertionError("standard TRADES must use kl_pgd, not the CE attack")

    torch.manual_seed(123)
    out = batch_loss(cfg, model.train(), x, y, attack=must_not_be_called)
    base.load_state_dict(state)  # undo the BatchNorm running-statistics update of the training forwards
    torch.manual_seed(123)
    x_adv = kl_pgd(base, x, eps=cfg.eps, alpha=cfg.pgd_alpha, steps=cfg.pgd_steps)  # replay the batch's attack
    torch.manual_seed(123)
    x_ref = _kl_pgd_reference(base, x, eps=cfg.eps, alpha=cfg.pgd_alpha, steps=cfg.pgd_steps)
    assert float((x_adv - x).abs().max()) <= cfg.eps + 1e-6
    # kl_pgd is the official attack (sign() of gradient entries that are zero up to rounding may differ).
    assert float((x_adv == x_ref).float().mean()) >= 0.99
    logits_c, _ = _forward(base, x, ROBUST)
    logits_a, _ = _forward(base, x_adv, ROBUST)
    expected = F.cross_entropy(logits_c, y) + 6.0 * _kl_batchmean(logits_c, logits_a)
    assert _close(out.loss, expected)
    assert torch.allclose(out.logits, logits_a, atol=1e-5)


def test_kl_pgd_stays_in_budget_and_restores_train_mode():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).train()
    x = torch.rand(6, 1, 8, 8)
    x_adv = kl_pgd(net, x, eps=0.05, alpha=0.02, steps=4)
    assert net.training
    assert float((x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert not x_adv.requires_grad


def test_trades_loss_variants_match_their_definitions():
    g = torch.Generator().manual_seed(1)
    lc, la = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    y = torch.randint(0, 5, (8,), generator=g)
    kl = _kl_batchmean(lc, la)
    assert _close(trades_loss(lc, la, y, beta=0.5, variant="ibrar"), F.cross_entropy(la, y) + 0.5 * kl)
    assert _close(trades_loss(lc, la, y, beta=6.0, variant="standard"), F.cross_entropy(lc, y) + 6.0 * kl)
    with pytest.raises(ValueError, match="variant: expected one of 'ibrar', 'standard', got 'nope'"):
        trades_loss(lc, la, y, beta=1.0, variant="nope")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.5, 6.0])
def test_mart_loss_matches_the_official_formula(seed, beta):
    g = torch.Generator().manual_seed(seed)
    lc, la = 3 * torch.randn(16, 10, generator=g), 3 * torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    y[:4] = la[:4].argmax(1)  # some samples whose true class is the adversarial top-1
    assert _close(mart_loss(lc, la, y, beta=beta), _official_mart(lc, la, y, beta), rtol=1e-5)


def test_mart_ib_uses_beta_half_and_ib_on_both_passes(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="mart", ib=True, ib_layers="robust", alpha=ALPHA, beta=BETA))
    assert (cfg.mart_beta, cfg.y_kernel, cfg.ib_on, cfg.schedule) == (0.5, "gaussian", "both", "none")
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, attack=_attack)

    x_adv = _attack(x, y)
    logits_c, acts_c = _forward(base, x, ROBUST)
    logits_a, acts_a = _forward(base, x_adv, ROBUST)
    task = _official_mart(logits_c, logits_a, y, 0.5)
    ib_c, _, _ = _ib(acts_c, x, y, alpha=ALPHA, beta=BETA, y_kernel="gaussian")
    ib_a, _, _ = _ib(acts_a, x, y, alpha=ALPHA, beta=BETA, y_kernel="gaussian")
    assert _close(out.parts["task"], task)
    assert _close(out.loss, task + ib_c + ib_a)


def test_hbar_is_ce_plus_hsic_terms_on_all_layers_with_linear_y(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="hbar"))
    assert (cfg.hbar_lambda_x, cfg.hbar_lambda_y) == (0.006, 0.05)
    model, base = build_model(cfg)
    all_layers = list(get_preset("digits-cnn").layers)
    assert list(model.layers) == all_layers and len(all_layers) > len(ROBUST)
    out = batch_loss(cfg, model.train(), x, y)

    logits, acts = _forward(base, x, all_layers)
    ib, hx, hy = _ib(acts, x, y, alpha=0.006, beta=0.05, y_kernel="linear")
    assert _close(out.parts["hx"], hx) and _close(out.parts["hy"], hy)
    assert _close(out.loss, F.cross_entropy(logits, y) + ib)


def test_hbar_with_pgd_takes_hsic_from_an_extra_clean_pass(digits_batch):
    """Spec §3: ``out = model(PGD(x, y)); Z = hooks(model(x))`` (extra clean pass), X clean."""
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="hbar", hbar_adv=True, hbar_lambda_x=ALPHA, hbar_lambda_y=BETA))
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, attack=_attack)
    all_layers = list(get_preset("digits-cnn").layers)
    logits_adv, _ = _forward(base, _attack(x, y), all_layers)
    _, acts_clean = _forward(base, x, all_layers)
    ib, hx, hy = _ib(acts_clean, x, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert torch.allclose(out.logits, logits_adv, atol=1e-6)
    assert _close(out.parts["hx"], hx) and _close(out.parts["hy"], hy)
    assert _close(out.loss, F.cross_entropy(logits_adv, y) + ib)
    assert model.num_records == 0


def test_hbar_mixup_mixes_inputs_but_not_the_hsic_labels(digits_batch):
    """Spec §3 hidden quirk: CE on mixed targets; HSIC with the mixed inputs and the unmixed labels."""
    from ib_plugins.baselines import mixup

    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="hbar", mixup_alpha=0.3, hbar_lambda_x=ALPHA, hbar_lambda_y=BETA))
    model, base = build_model(cfg)
    out = batch_loss(cfg, model.train(), x, y, extra={"mixup_generator": torch.Generator().manual_seed(5)})
    x_mix, y_a, y_b, lam = mixup(x, y, alpha=0.3, generator=torch.Generator().manual_seed(5))
    all_layers = list(get_preset("digits-cnn").layers)
    logits, acts = _forward(base, x_mix, all_layers)
    ce = lam * F.cross_entropy(logits, y_a) + (1 - lam) * F.cross_entropy(logits, y_b)
    ib, _, _ = _ib(acts, x_mix, y, alpha=ALPHA, beta=BETA, y_kernel="linear")
    assert _close(out.parts["task"], ce)
    assert _close(out.loss, ce + ib)


def test_vib_is_ce_plus_beta_kl_with_one_reparameterised_sample(digits_batch):
    x, y = digits_batch
    cfg = resolve_config(TrainConfig(method="vib", vib_beta=0.5, vib_k=16))
    model, _ = build_model(cfg)
    model.train()
    torch.manual_seed(7)
    out = batch_loss(cfg, model, x, y, extra={"vib_head": model.head})

    torch.manual_seed(7)
    with torch.no_grad():
        feats = model.backbone(x).flatten(1)
        stats = model.head.encoder(feats)
        mu, std = stats[:, :16], F.softplus(stats[:, 16:] - 5.0)
        z = mu + std * torch.randn(std.shape)
        logits = model.head.classifier(z)
        kl = (0.5 * (mu**2 + std**2 - 1.0 - 2.0 * torch.log(std))).sum(dim=1).mean()
    assert torch.allclose(out.logits, logits, atol=1e-5)
    assert _close(out.parts["kl"], kl)
    assert _close(out.loss, F.cross_entropy(logits, y) + 0.5 * kl)
    # The evaluation network is deterministic (z = μ).
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def _entropy(h: torch.Tensor) -> torch.Tensor:
    """Spec §4.2 relu-safe per-sample ``E(h) = −Σ_j φ(max(h_j, 0))`` with ``φ(0) = 0``."""
    h = h.reshape(h.shape[0], -1).clamp_min(0)
    return -torch.where(h > 0, h * torch.log(h.clamp_min(1e-30)), torch.zeros_like(h)).sum(dim=1)


def _entropy_flow(acts: list[torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``(E(h_1) − E(softmax)) / (M − 1)`` per sample (M counts the softmax output)."""
    m = len(acts) + 1
    return (_entropy(acts[0]) - _entropy(F.softmax(logits, dim=1))) / (m - 1)


def test_entropic_retraining_loss_and_reference(tmp_path):
    from ib_plugins.entropic import EntropicLoss, EntropyProbe

    pre_dir, ent_dir = tmp_path / "pretrained", tmp_path / "entropic"
    Trainer(_tiny(method="ce", train_limit=100, batch_size=50), out_dir=pre_dir, progress=False).fit()
    ckpt = pre_dir / "checkpoint.pt"
    cfg = _tiny(method="entropic", init_checkpoint=str(ckpt), train_limit=100, batch_size=50)
    resolved = resolve_config(cfg)
    assert (resolved.optimizer, resolved.lr, resolved.weight_decay, resolved.schedule) == ("adam", 1e-3, 0.0, "none")
    assert resolved.entropic_sigma == 1.65  # MNIST-like setting (Table I)
    final = Trainer(cfg, out_dir=ent_dir, progress=False).fit()

    # E_T_ref: mean over the training subset of the *pretrained* network's E_T, in eval mode.
    layers = list(get_preset("digits-cnn").layers)
    pretrained, _, _ = load_model_from_checkpoint(ckpt)
    x_train, _ = load_dataset("digits", split="train", limit=100, seed=0).tensors
    with torch.no_grad(), capture_activations(pretrained, layers, when="always", detach=True) as cap:
        logits = pretrained(x_train)
    reference = float(_entropy_flow([cap.activations[n] for n in layers], logits).mean())
    assert _close(final["entropic_reference_et"], reference, rtol=1e-4, atol=1e-4)

    # One batch of the retrained network through batch_loss: CE + λ(mean E_T − σ·E_T_ref)².
    net, _, _ = load_model_from_checkpoint(ent_dir / "checkpoint.pt")
    net.train()
    x, y = x_train[:20], load_dataset("digits", split="train", limit=100, seed=0).tensors[1][:20]
    loss_fn = EntropicLoss(reference=reference, lam=1.0, sigma=1.65)
    with EntropyProbe(net, layers) as probe:
        out = batch_loss(resolved, net, x, y, extra={"loss": loss_fn, "probe": probe})
    logits, acts = _forward(net, x, layers)
    et = _entropy_flow(acts, logits).mean()
    expected = F.cross_entropy(logits, y) + 1.0 * (et - 1.65 * reference) ** 2
    assert _close(out.parts["et"], et, rtol=1e-4)
    assert _close(out.parts["task"], F.cross_entropy(logits, y))
    assert _close(out.loss, expected, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Presets (spec §2.3, A6-A8, A11)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["pgd-at", "trades", "mart"])
def test_ibrar_code_preset_for_adversarial_training(method):
    c = resolve_config(TrainConfig(method=method, dataset="cifar10", model="vgg16", ib=True))
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay) == ("sgd", 0.01, 0.0, 1e-2)
    assert (c.epochs, c.batch_size, c.alpha, c.beta) == (60, 100, 0.008, 0.08)
    assert c.eps == 0.03 and math.isclose(c.pgd_alpha, 2.3 * 0.03 / 10) and c.pgd_steps == 10
    assert c.x_for_ib == "clean"
    assert c.augment is True
    if method == "mart":
        assert (c.schedule, c.mart_beta) == ("none", 0.5)  # scheduler.step() commented out
    else:
        assert (c.schedule, c.step_size, c.gamma) == ("step", 20, 0.2)
    if method == "pgd-at":
        assert (c.y_kernel, c.ib_on) == ("linear", "adv")
    else:
        assert (c.y_kernel, c.ib_on, c.variant) == ("gaussian", "both", "ibrar")
    if method == "trades":
        assert c.trades_beta == 0.5


def test_ibrar_code_preset_for_ce():
    c = resolve_config(TrainConfig(method="ce", dataset="cifar10", model="vgg16", ib=True))
    assert (c.optimizer, c.lr, c.momentum, c.weight_decay, c.schedule) == ("sgd", 0.01, 0.9, 0.0, "step")
    assert c.y_kernel == "gaussian" and c.ib_on == "clean"
    assert resolve_config(TrainConfig(method="ce", ib=True, mask="code")).y_kernel == "linear"
    assert resolve_config(TrainConfig(method="ce", ib=True, mask="paper")).y_kernel == "linear"


def test_pgd_step_follows_the_number_of_steps():
    c = resolve_config(TrainConfig(method="pgd-at", dataset="cifar10", model="vgg16", pgd_steps=5))
    assert math.isclose(c.pgd_alpha, 2.3 * 0.03 / 5)
    digits = resolve_config(TrainConfig(method="pgd-at"))
    assert digits.eps == 0.1 and math.isclose(digits.pgd_alpha, 2.3 * 0.1 / 10)
    assert digits.augment is False


@pytest.mark.parametrize("method", ["ce", "pgd-at", "trades", "mart"])
def test_paper_preset(method):
    c = resolve_config(TrainConfig(method=method, preset="paper", dataset="cifar10", model="vgg16"))
    assert math.isclose(c.eps, 8 / 255) and math.isclose(c.pgd_alpha, 2 / 255)
    assert c.weight_decay == 1e-2  # "SGD, weight_decay=1e-2" for all training (seed L174-177)
    assert c.optimizer == "sgd"


def test_standard_preset():
    for method in ("trades", "mart"):
        c = resolve_config(TrainConfig(method=method, preset="standard", dataset="cifar10", model="resnet18"))
        assert (c.variant, c.trades_beta, c.mart_beta) == ("standard", 6.0, 6.0)
        assert c.eps == 0.031 and math.isclose(c.pgd_alpha, 0.007)
        assert c.schedule == "step"


def test_baseline_presets():
    hbar = resolve_config(TrainConfig(method="hbar"))
    assert (hbar.hbar_lambda_x, hbar.hbar_lambda_y, hbar.momentum) == (0.006, 0.05, 0.9)
    hbar_adv = resolve_config(TrainConfig(method="hbar", hbar_adv=True))
    assert (hbar_adv.hbar_lambda_x, hbar_adv.hbar_lambda_y, hbar_adv.momentum) == (0.0005, 0.005, 0.0)
    vib = resolve_config(TrainConfig(method="vib"))
    assert (vib.vib_beta, vib.vib_k, vib.optimizer, vib.momentum) == (1e-3, 256, "sgd", 0.9)
    ent = resolve_config(
        TrainConfig(method="entropic", dataset="cifar10", model="keras-cifar-cnn", init_checkpoint="x.pt")
    )
    assert (ent.optimizer, ent.entropic_sigma, ent.entropic_lambda) == ("adam", 1.01, 1.0)


def test_resolve_keeps_explicit_values_is_idempotent_and_does_not_mutate():
    cfg = TrainConfig(method="pgd-at", weight_decay=0.5, momentum=0.3, y_kernel="gaussian", eps=0.2, pgd_alpha=0.05)
    before = cfg.to_dict()
    c = resolve_config(cfg)
    assert (c.weight_decay, c.momentum, c.y_kernel, c.eps, c.pgd_alpha) == (0.5, 0.3, "gaussian", 0.2, 0.05)
    assert cfg.to_dict() == before
    assert resolve_config(c) == c
    optional = ("init_checkpoint", "data_dir", "mask", "train_limit", "test_limit", "amp",
                # None = off (issue 14): no warm-up, no EMA, no robust validation, no TensorBoard
                "milestones", "warmup_epochs", "ema_decay", "robust_val_every", "val_size", "tensorboard")
    assert all(v is not None for k, v in c.to_dict().items() if k not in optional)


def test_explicit_entropic_sigma_is_kept_on_cifar():
    """An explicitly requested σ must survive resolution like every other explicit value."""
    c = resolve_config(
        TrainConfig(
            method="entropic", dataset="cifar10", model="keras-cifar-cnn", init_checkpoint="x.pt", entropic_sigma=1.65
        )
    )
    assert c.entropic_sigma == 1.65


def test_config_round_trip_and_run_identity():
    c = resolve_config(TrainConfig(method="trades", ib=True))
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.run_identity() == dataclasses.replace(c, epochs=3, device="cuda", eval_every=5).run_identity()
    assert c.run_identity() != dataclasses.replace(c, alpha=0.1).run_identity()
    with pytest.raises(ValueError, match="unknown training config keys: nope; valid keys: .*alpha"):
        TrainConfig.from_dict({"nope": 1})


# ---------------------------------------------------------------------------------------------
# Bad input: clear errors naming the argument and the valid values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "valid"),
    [
        ("dataset", "'digits', 'fashion-mnist', 'mnist', 'cifar10'"),
        ("model", "'digits-cnn'"),
        ("method", ", ".join(map(repr, METHODS))),
        ("preset", ", ".join(map(repr, PRESETS))),
        ("mask", "'paper', 'code'"),
        ("optimizer", "'sgd', 'adam'"),
        ("y_kernel", "'linear', 'gaussian'"),
        ("ib_on", "'adv', 'clean', 'both'"),
        ("x_for_ib", "'clean', 'adv'"),
        ("variant", "'ibrar', 'standard'"),
        ("schedule", "'step', 'none'"),
    ],
)
def test_unknown_names_list_the_valid_ones(tmp_path, field, valid):
    cfg = TrainConfig(**{field: "nope"})
    pattern = re.escape(f"{field}: expected one of ") + ".*" + re.escape(valid) + ".*got 'nope'"
    with pytest.raises(ValueError, match=pattern):
        resolve_config(cfg)
    with pytest.raises(ValueError, match=f"{field}: expected one of"):
        Trainer(cfg, out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("eps", [1.5, -0.01, float("nan"), "0.1"])
def test_eps_outside_unit_interval_is_refused(eps):
    with pytest.raises(ValueError, match=r"eps: expected a number in \[0, 1\]"):
        resolve_config(TrainConfig(method="pgd-at", eps=eps))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs: expected an int >= 1, got 0"),
        ({"batch_size": True}, "batch_size: expected an int >= 1, got True"),
        ({"pgd_steps": 2.5}, "pgd_steps: expected an int >= 1, got 2.5"),
        ({"alpha": -1.0}, "alpha: expected a finite number >= 0, got -1.0"),
        ({"lr": float("inf")}, "lr: expected a finite number >= 0, got inf"),
        ({"ib": True, "batch_size": 1}, "batch_size: the HSIC terms need batches of at least 2"),
        ({"method": "hbar", "ib": True}, "ib/mask: the IB-RAR term combines with methods"),
        ({"method": "vib", "mask": "code"}, "ib/mask: the IB-RAR term combines with methods"),
        ({"method": "entropic"}, "init_checkpoint: entropic retraining starts from a pretrained checkpoint"),
    ],
)
def test_out_of_range_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_config(TrainConfig(**overrides))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [("pgd_alpha", -0.01), ("trades_beta", -1.0), ("mart_beta", float("nan")), ("hbar_lambda_x", -0.1),
     ("hbar_lambda_y", float("inf")), ("entropic_sigma", 0.0), ("gamma", -0.5)],
)
def test_negative_or_non_finite_weights_are_refused(field, value):
    """Every numeric hyperparameter is validated when the config is resolved (conventions: validate early)."""
    methods = {"trades_beta": "trades", "mart_beta": "mart", "hbar_lambda_x": "hbar", "hbar_lambda_y": "hbar"}
    method = methods.get(field, "pgd-at")
    extra = {"method": "entropic", "init_checkpoint": "x.pt"} if field == "entropic_sigma" else {"method": method}
    with pytest.raises(ValueError, match=f"{field}: expected a finite number"):
        resolve_config(TrainConfig(**extra, **{field: value}))  # type: ignore[arg-type]


@pytest.mark.parametrize(("ib_layers", "missing"), [(["nope"], "nope"), ("vgg16:robust", "block5")])
def test_layers_missing_from_the_model_raise_unknown_layer_error(tmp_path, ib_layers, missing):
    out = tmp_path / "run"
    trainer = Trainer(_tiny(ib=True, ib_layers=ib_layers), out_dir=out, progress=False)
    with pytest.raises(UnknownLayerError, match=missing):
        trainer.fit()
    assert not out.exists()  # nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here, so device='cuda' is valid")
def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="device: 'cuda' was requested but CUDA is not available"):
        Trainer(_tiny(device="cuda"), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_missing_dataset_files_offline(tmp_path):
    empty = tmp_path / "empty-data"
    empty.mkdir()
    out = tmp_path / "run"
    cfg = _tiny(dataset="cifar10", model="keras-cifar-cnn", data_dir=str(empty))
    trainer = Trainer(cfg, out_dir=out, progress=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
        trainer.fit()
    assert not out.exists()


def test_bad_resume_argument():
    with pytest.raises(ValueError, match="resume: expected True, False or 'auto', got 'yes'"):
        Trainer(_tiny(), out_dir="unused", resume="yes")


# ---------------------------------------------------------------------------------------------
# Runs, results folders, the mask schedule
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[TrainConfig, Path, dict]:
    """A finished one-epoch CE run on 100 digits (shared by several tests; do not modify it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    cfg = _tiny()
    final = Trainer(cfg, out_dir=out, progress=False).fit()
    return cfg, out, final


def test_results_folder_contents(finished_run):
    cfg, out, final = finished_run
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "checkpoint.pt", "history.json", "metrics.json", "results.md"} <= names
    assert any(n.endswith(".png") for n in names)
    assert not any(n.endswith(".tmp") for n in names)
    written = json.loads((out / "config.json").read_text())
    assert written == resolve_config(cfg).to_dict()  # the *resolved* configuration
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test_acc"] <= 1.0 and 0.0 <= metrics["train_acc"] <= 1.0
    assert math.isfinite(metrics["train_loss"])
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert final["test_acc"] == metrics["test_acc"]


def test_checkpoint_loads_with_weights_only(finished_run):
    _, out, _ = finished_run
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["format"] == 1
    assert {"model", "optimizer", "rng", "config", "history"} <= set(ckpt)
    assert all(isinstance(v, torch.Tensor) for v in ckpt["model"].values())
    assert load_checkpoint(out / "checkpoint.pt")["config"] == ckpt["config"]
    model, cfg, _ = load_model_from_checkpoint(out / "checkpoint.pt", expect_model="digits-cnn")
    assert not model.training and cfg.model == "digits-cnn"
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])


def test_plain_runs_write_no_ema_validation_or_information_plane(finished_run):
    """Issue 14's additions are off by default: the checkpoint says so, no extra files are written."""
    _, out, final = finished_run
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["model_ema"] is None and ckpt["ema_n_averaged"] is None and ckpt["validation"] is None
    assert not (out / "checkpoint_best.pt").exists() and not (out / "information_plane.png").exists()
    assert not any(k.startswith(("hsic/", "val_", "best_")) or k.endswith("_ema") for k in final)


def test_training_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    Trainer(_tiny(train_limit=50, test_limit=20), out_dir=tmp_path / "run", progress=False).fit()
    assert torch.equal(torch.rand(3), expected)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path, finished_run):
    cfg, out, _ = finished_run
    Trainer(cfg, out_dir=tmp_path / "again", progress=False).fit()
    a, b = _ckpt_tensors(out / "checkpoint.pt"), _ckpt_tensors(tmp_path / "again" / "checkpoint.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    Trainer(dataclasses.replace(cfg, seed=1), out_dir=tmp_path / "seed1", progress=False).fit()
    c = _ckpt_tensors(tmp_path / "seed1" / "checkpoint.pt")
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mask_schedule_every_tenth_batch_skipping_the_first(tmp_path):
    # 220 images / batch 10 = 22 batches per epoch; masked: batches 10 and 20 -> 2 per epoch.
    cfg = TrainConfig(mask="code", mask_every=10, epochs=2, train_limit=220, test_limit=20, batch_size=10, step_size=1)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["masked_forwards"] for h in history] == [2, 4]  # cumulative count of masked forwards


def test_mask_acts_on_both_trades_passes(tmp_path):
    # 80 images / batch 20 = 4 batches; every=3 masks batch 3 only, in its clean and adversarial pass.
    cfg = TrainConfig(method="trades", ib=True, mask="code", mask_every=3, epochs=1, train_limit=80, test_limit=20,
                      batch_size=20, pgd_steps=1)
    final = Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    assert final["masked_forwards"] == 2


def test_lr_schedule_and_history(tmp_path):
    cfg = _tiny(epochs=2, step_size=1, gamma=0.5, train_limit=50, test_limit=20)
    Trainer(cfg, out_dir=tmp_path / "run", progress=False).fit()
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["lr"] for h in history] == pytest.approx([0.005, 0.0025])


# ---------------------------------------------------------------------------------------------
# Folders of other runs, resume
# ---------------------------------------------------------------------------------------------
def test_folder_of_a_different_run_is_refused_unless_overwrite(tmp_path, finished_run):
    cfg, out, _ = finished_run
    other = dataclasses.replace(cfg, alpha=0.1)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RunExistsError, match="already holds a different run"):
        Trainer(other, out_dir=out)
    with pytest.raises(RunExistsError, match="already holds a different run"):
        Trainer(other, out_dir=out, resume="auto")
    with pytest.raises(RunExistsError, match="resume=True"):
        Trainer(cfg, out_dir=out)  # the same run, finished: resume or overwrite, never silently retrain
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_bytes(before["config.json"])
    Trainer(other, out_dir=copy, overwrite=True, progress=False)  # accepted


def _copy_run(src, dst):
    """A new run folder holding a copy of ``src``'s config.json and checkpoint.pt."""
    dst.mkdir()
    for name in ("config.json", "checkpoint.pt"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_resume_of_a_different_run_is_refused_before_writing(tmp_path, finished_run):
    cfg, out, _ = finished_run
    run = _copy_run(out, tmp_path / "run")
    before = (run / "config.json").read_text()
    trainer = Trainer(dataclasses.replace(cfg, alpha=0.1, epochs=2), out_dir=run, resume=True, progress=False)
    with pytest.raises(RunExistsError, match="different run .*alpha"):
        trainer.fit()
    assert (run / "config.json").read_text() == before


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        Trainer(_tiny(), out_dir=tmp_path, resume=True)


def test_resume_auto_reuses_a_finished_run(tmp_path, finished_run):
    cfg, out, final = finished_run
    run = _copy_run(out, tmp_path / "run")
    os.utime(run / "checkpoint.pt", ns=(1_000_000_000, 1_000_000_000))
    epochs_trained = []
    count = [lambda t, e, m: epochs_trained.append(e)]
    again = Trainer(cfg, out_dir=run, resume="auto", progress=False, callbacks=count)
    result = again.fit()
    assert epochs_trained == []  # nothing retrained
    assert (run / "checkpoint.pt").stat().st_mtime_ns == 1_000_000_000
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert result["epochs"] == 1 and result["test_acc"] == final["test_acc"]
    # An empty folder with resume="auto" simply trains.
    fresh = Trainer(cfg, out_dir=tmp_path / "fresh", resume="auto", progress=False, callbacks=count)
    fresh.fit()
    assert epochs_trained == [1]


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = _ckpt_tensors(a), _ckpt_tensors(b)
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, f"tensors differ after resume: {different}"


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path):
    # Exercises the global RNG (PGD random starts), loader shuffling, the mask schedule, the
    # optimiser and a StepLR that changes the learning rate every epoch.
    cfg = TrainConfig(method="pgd-at", ib=True, mask="code", mask_every=2, epochs=2, train_limit=120, test_limit=40,
                      batch_size=20, pgd_steps=2, step_size=1)
    a, b = tmp_path / "straight", tmp_path / "resumed"
    Trainer(cfg, out_dir=a, progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(cfg, out_dir=b, progress=False, callbacks=[interrupt_after(1)]).fit()
    assert torch.load(b / "checkpoint.pt", weights_only=True)["epoch"] == 1
    Trainer(cfg, out_dir=b, resume=True, progress=False).fit()
    _assert_same_weights(a / "checkpoint.pt", b / "checkpoint.pt")
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    assert [h["train_loss"] for h in ha] == [h["train_loss"] for h in hb]
    assert [h["masked_forwards"] for h in hb] == [2, 4]  # 6 batches per epoch: batches 2 and 4 masked


def test_extended_run_with_augmentation_matches_a_straight_one(tmp_path):
    """epochs=1 then resume with epochs=2 (a longer schedule) equals epochs=2 straight; augment=True."""
    cfg = TrainConfig(method="pgd-at", augment=True, epochs=2, train_limit=60, test_limit=20, batch_size=20,
                      pgd_steps=1, step_size=1)
    a, b = tmp_path / "straight", tmp_path / "extended"
    Trainer(cfg, out_dir=a, progress=False).fit()
    Trainer(dataclasses.replace(cfg, epochs=1), out_dir=b, progress=False).fit()
    Trainer(cfg, out_dir=b, resume=True, progress=False).fit()
    _assert_same_weights(a / "checkpoint.pt", b / "checkpoint.pt")
    assert json.loads((b / "config.json").read_text())["epochs"] == 2


def _write_fake_cifar10(root: Path, n_per_batch: int = 8) -> None:
    """A tiny stand-in for cifar-10-batches-py (python-pickle dicts of uint8 arrays)."""
    import pickle

    np = pytest.importorskip("numpy", reason="numpy is needed to write CIFAR-format batches")
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(i % 10) for i in range(n_per_batch)]
        with (folder / name).open("wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)


@pytest.mark.slow
def test_resume_is_exact_with_real_random_crop_and_flip(tmp_path):
    """CIFAR-style augmentation draws from its own generator, which the checkpoint must restore."""
    data = tmp_path / "data"
    _write_fake_cifar10(data)
    cfg = TrainConfig(dataset="cifar10", model="keras-cifar-cnn", method="pgd-at", epochs=2, batch_size=10,
                      pgd_steps=1, step_size=1, data_dir=str(data))
    assert resolve_config(cfg).augment is True
    a, b = tmp_path / "straight", tmp_path / "resumed"
    Trainer(cfg, out_dir=a, progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(cfg, out_dir=b, progress=False, callbacks=[interrupt_after(1)]).fit()
    Trainer(cfg, out_dir=b, resume=True, progress=False).fit()
    _assert_same_weights(a / "checkpoint.pt", b / "checkpoint.pt")


def test_non_finite_epoch_loss_stops_without_overwriting_the_last_checkpoint(tmp_path):
    def poison_after_epoch_1(trainer, epoch, metrics):
        if epoch == 1:
            with torch.no_grad():
                next(trainer.base.parameters()).fill_(float("nan"))

    out = tmp_path / "run"
    trainer = Trainer(_tiny(epochs=2), out_dir=out, progress=False, callbacks=[poison_after_epoch_1])
    with pytest.raises(FloatingPointError, match=r"non-finite \(NaN or inf\) in epoch 2; its checkpoint was not written"):
        trainer.fit()
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1
    assert all(bool(t.isfinite().all()) for t in ckpt["model"].values() if t.is_floating_point())


def test_amp_rejects_an_unknown_precision():
    with pytest.raises(ValueError, match=r"amp: expected one of 'bf16', 'fp16', got 'fp32'"):
        resolve_config(TrainConfig(amp="fp32"))


def test_amp_bf16_trains_ib_and_mask_close_to_float32_but_not_equal(tmp_path):
    cfg = _tiny(ib=True, mask="code", mask_every=1, epochs=2)
    runs = {}
    for amp in (None, "bf16"):
        trainer = Trainer(dataclasses.replace(cfg, amp=amp), out_dir=tmp_path / str(amp), progress=False)
        runs[amp] = (trainer.fit(), trainer.base.state_dict())
    (m32, s32), (m16, s16) = runs[None], runs["bf16"]
    assert all(math.isfinite(m16[k]) for k in ("train_loss", "train_task", "train_hx", "train_hy"))
    # autocast really ran (bf16 rounding changes the weights) ...
    assert any(not torch.equal(s32[k], s16[k]) for k in s32 if s32[k].is_floating_point())
    # ... and the weights stay float32, the losses close to the float32 run's
    assert all(v.dtype == torch.float32 for v in s16.values() if v.is_floating_point())
    for key in ("train_task", "train_hx", "train_hy"):
        assert math.isclose(m16[key], m32[key], rel_tol=0.05), (key, m16[key], m32[key])


def test_amp_fp16_checkpoints_the_grad_scaler_and_resumes_exactly(tmp_path):
    cfg = _tiny(ib=True, epochs=2, amp="fp16")  # 4 batches per epoch
    a, b = tmp_path / "straight", tmp_path / "resumed"
    Trainer(cfg, out_dir=a, progress=False).fit()
    with pytest.raises(Interrupt):
        Trainer(cfg, out_dir=b, progress=False, callbacks=[interrupt_after(1)]).fit()
    mid = torch.load(b / "checkpoint.pt", weights_only=True)["grad_scaler"]
    assert mid["_growth_tracker"] == 4 and mid["scale"] == 2.0**16  # no overflow: 4 steps since the last one
    Trainer(cfg, out_dir=b, resume=True, progress=False).fit()
    _assert_same_weights(a / "checkpoint.pt", b / "checkpoint.pt")
    # The scaler's state came back: a fresh scaler would have counted 4 steps, not 8.
    for d in (a, b):
        assert torch.load(d / "checkpoint.pt", weights_only=True)["grad_scaler"]["_growth_tracker"] == 8
    assert json.loads((a / "config.json").read_text())["amp"] == "fp16"


def test_progress_bars_do_not_change_the_run(tmp_path):
    """Regression: tqdm.auto's class calls iter() on a wrapped iterable in its constructor, which drew
    from the loader's generator, so showing progress bars changed the shuffling (and every result)."""
    pytest.importorskip("tqdm", reason="the progress bar needs tqdm")
    cfg = _tiny(epochs=2)
    states = []
    for progress in (False, True):
        trainer = Trainer(cfg, out_dir=tmp_path / f"progress-{progress}", progress=progress)
        trainer.fit()
        states.append(trainer.base.state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# --------------------------------------------------------------------------------------------
# the ibrar-code preset follows the authors' scripts: which layers, and the mask/record order
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["pgd-at", "trades", "mart"])
def test_ibrar_code_adversarial_training_hooks_every_vgg16_layer(method):
    config = resolve_config(TrainConfig(method=method, ib=True, model="vgg16", dataset="cifar10"))
    trainable, _ = build_model(config)
    assert config.ib_layers == "all"
    assert trainable.layers == get_preset("vgg16").layers and len(trainable.layers) == 7


def test_ibrar_code_ce_hooks_the_robust_layers_where_the_model_has_them():
    config = resolve_config(TrainConfig(method="ce", ib=True, model="vgg16", dataset="cifar10"))
    assert build_model(config)[0].layers == ("block5", "fc1", "fc2")
    # the paper names no robust layers for ResNet-18: the authors' default, every hook point
    config = resolve_config(TrainConfig(method="ce", ib=True, model="resnet18", dataset="cifar10"))
    assert build_model(config)[0].layers == get_preset("resnet18").layers
    # an explicit choice is kept
    config = resolve_config(TrainConfig(method="pgd-at", ib=True, ib_layers="robust", model="vgg16", dataset="cifar10"))
    assert build_model(config)[0].layers == ("block5", "fc1", "fc2")


def _recorded_and_unmasked_pool(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model, base = build_model(resolve_config(config))
    model.mask.every, model.mask.skip_first = 1, False
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 10
    seen: dict[str, torch.Tensor] = {}
    # a hook that runs first on `pool` sees the unmasked pooled vector; one on `fc`, what the head got
    h1 = base.pool.register_forward_hook(lambda m, i, o: seen.setdefault("unmasked", o.detach().clone()), prepend=True)
    h2 = base.fc.register_forward_pre_hook(lambda m, i: seen.setdefault("head_input", i[0].detach().clone()))
    try:
        with model.train().labels(y):
            model(x)
    finally:
        h1.remove()
        h2.remove()
    return model.activations["pool"].detach(), seen["unmasked"], seen["head_input"], model.mask.last_keep


def test_resnet18_ibrar_code_records_the_unmasked_pooled_vector():
    config = TrainConfig(ib=True, model="resnet18", dataset="cifar10", mask="code")
    assert resolve_config(config).record_masked is False
    recorded, unmasked, head_input, keep = _recorded_and_unmasked_pool(config)
    assert int((~keep).sum()) > 0
    assert torch.equal(recorded.flatten(1), unmasked.flatten(1))  # the IB term sees the pooled vector before the mask
    assert bool((head_input[:, ~keep] == 0).all())  # while the classifier gets the masked one
    assert torch.equal(head_input[:, keep], unmasked.flatten(1)[:, keep])


def test_record_order_is_an_explicit_option():
    # paper preset (Algorithm 1: T_last <- T_last * mask, then the IB term): the masked vector
    config = TrainConfig(ib=True, model="resnet18", dataset="cifar10", mask="code", preset="paper")
    assert resolve_config(config).record_masked is True
    recorded, unmasked, _, keep = _recorded_and_unmasked_pool(config)
    assert bool((recorded.flatten(1)[:, ~keep] == 0).all())
    assert torch.equal(recorded.flatten(1)[:, keep], unmasked.flatten(1)[:, keep])
    # and a user's explicit choice overrides either preset
    assert resolve_config(dataclasses.replace(config, record_masked=False)).record_masked is False
    vgg = resolve_config(TrainConfig(ib=True, model="vgg16", dataset="cifar10", mask="code"))
    assert vgg.record_masked is True  # the authors' VGG-16 masks block 5 before recording it
    with pytest.raises(ValueError, match="record_masked"):
        resolve_config(TrainConfig(record_masked="no"))
