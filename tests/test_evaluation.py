"""Tests of ib_plugins.evaluation: suites and budgets, side-effect-free attacks, metrics, reports."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from ib_plugins import wrap_model
from ib_plugins.evaluation import (
    SUITES,
    AttackResult,
    AttackSpec,
    SuiteResult,
    accuracy_vs_steps,
    build_suite,
    compare_markdown,
    default_budget,
    evaluate_suite,
    list_attacks,
    list_budgets,
    list_suites,
    misclassification_tendency,
    noise_accuracy,
    plot_accuracy_vs_steps,
    random_noise,
    run_attack,
    tendency_markdown,
)

pytest.importorskip("torchattacks", reason="the attack tests need torchattacks (pip install 'ib-plugins[attacks]')")

NUM_CLASSES = 4


class TinyCNN(nn.Module):
    """A small CNN on 1x8x8 inputs with BN and dropout (so eval/train modes matter)."""

    def __init__(self, num_classes: int = NUM_CLASSES, *, log_probs: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(4 * 8 * 8, num_classes)
        self.log_probs = log_probs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.drop(self.features(x).flatten(1)))
        return out.log_softmax(dim=1) if self.log_probs else out


class RaisesOnGrad(TinyCNN):
    """Works for plain forwards, raises inside an attack (input requires grad)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError("boom inside the attack")
        return super().forward(x)


class MeanLinear(nn.Module):
    """Two classes: logit0 = sum(x - 0.5), logit1 = -logit0 (class 0 iff the mean pixel > 0.5)."""

    def __init__(self, pixels: int = 16) -> None:
        super().__init__()
        self.lin = nn.Linear(pixels, 2)
        with torch.no_grad():
            self.lin.weight.copy_(torch.stack([torch.ones(pixels), -torch.ones(pixels)]))
            self.lin.bias.copy_(torch.tensor([-0.5 * pixels, 0.5 * pixels]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def _model(seed: int = 0, **kwargs) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(**kwargs)


def _data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


# --------------------------------------------------------------------------------------------------
# Suites and budgets
# --------------------------------------------------------------------------------------------------


def test_ibrar_code_suite_matches_the_spec():
    specs = {s.name: s for s in build_suite("ibrar", budget="ibrar-code", dataset="cifar10", num_classes=10)}
    assert list(specs) == ["pgd", "cw", "fgsm", "fab", "nifgsm"]
    pgd = specs["pgd"]
    assert (pgd.attack_class, pgd.norm, pgd.eps) == ("PGD", "linf", 0.03)
    assert pgd.kwargs["alpha"] == pytest.approx(2.3 * 0.03 / 10) and pgd.kwargs["alpha"] == pytest.approx(0.0069)
    assert pgd.kwargs["steps"] == 10 and pgd.kwargs["random_start"] is True
    cw = specs["cw"]
    assert (cw.attack_class, cw.norm, cw.eps) == ("CW", "l2", None)
    assert dict(cw.kwargs) == {"c": 0.1, "kappa": 0, "steps": 200, "lr": 0.1}
    assert specs["fgsm"].constructor_kwargs() == {"eps": 0.03}
    assert specs["fab"].constructor_kwargs() == {
        "eps": 0.03, "norm": "Linf", "steps": 10, "n_restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9,
        "n_classes": 10,
    }
    nif = specs["nifgsm"]
    assert nif.eps == 0.03 and nif.kwargs["alpha"] == pytest.approx(2 / 255)
    assert nif.kwargs["steps"] == 10 and nif.kwargs["decay"] == 1.0


def test_ibrar_code_pgd_step_follows_steps_and_num_classes_defaults_to_dataset():
    pgd = build_suite("ibrar", dataset="cifar100", pgd_steps=50, attacks=["pgd"])[0]
    assert pgd.kwargs["steps"] == 50 and pgd.kwargs["alpha"] == pytest.approx(2.3 * 0.03 / 50)
    fab = build_suite("ibrar", dataset="cifar100", attacks=["fab"])[0]
    assert fab.kwargs["n_classes"] == 100
    assert build_suite("ibrar", cw_steps=7, attacks=["cw"])[0].kwargs["steps"] == 7


@pytest.mark.parametrize("dataset", ["cifar10", "svhn", "tiny-imagenet"])
def test_paper_budget_uses_8_over_255_and_2_over_255(dataset):
    specs = {s.name: s for s in build_suite("ibrar", budget="paper", dataset=dataset)}
    for name in ("pgd", "fgsm", "fab", "nifgsm"):
        assert specs[name].eps == pytest.approx(8 / 255)
    assert specs["pgd"].kwargs["alpha"] == pytest.approx(2 / 255)
    pgd50 = build_suite("ibrar", budget="paper", pgd_steps=50, attacks=["pgd"])[0]
    assert pgd50.kwargs["alpha"] == pytest.approx(2 / 255)
    assert specs["nifgsm"].kwargs["alpha"] == pytest.approx(2 / 255)
    assert specs["cw"].eps is None and specs["cw"].kwargs["c"] == 0.1


def test_entropic_suite_budgets_and_foolbox_steps():
    mnist = {s.name: s for s in build_suite("entropic", dataset="mnist")}
    assert list(mnist) == ["linf-pgd", "bim", "fgsm", "cw", "l2-pgd"]
    assert mnist["linf-pgd"].eps == 0.3 and mnist["linf-pgd"].kwargs["alpha"] == pytest.approx(0.01)
    assert mnist["linf-pgd"].kwargs["steps"] == 40 and mnist["linf-pgd"].kwargs["random_start"] is True
    assert mnist["bim"].attack_class == "BIM" and mnist["bim"].kwargs["alpha"] == pytest.approx(0.06)
    assert mnist["fgsm"].eps == 0.3
    assert mnist["cw"].eps is None and dict(mnist["cw"].kwargs) == {"c": 1.0, "kappa": 0.0, "lr": 0.01, "steps": 100}
    l2 = mnist["l2-pgd"]
    assert (l2.attack_class, l2.norm, l2.eps, l2.kwargs["steps"]) == ("PGDL2", "l2", 4.5, 50)
    assert l2.kwargs["alpha"] == pytest.approx(0.025 * 4.5)
    assert l2.kwargs["eps_for_division"] <= 1e-20  # foolbox's normalisation, not torchattacks' + 1e-10
    cifar = {s.name: s for s in build_suite("entropic", dataset="cifar10")}
    assert cifar["linf-pgd"].eps == 0.03 and cifar["l2-pgd"].eps == 0.95
    fashion = default_budget("fashion-mnist", "entropic")
    assert (fashion.linf_eps, fashion.l2_eps) == (0.3, 4.5)


def test_entropic_l2_pgd_does_not_stall_on_confident_images():
    # Logits ±25·(x0 − x1) on x0 − x1 = 0.8: margin 40, so the CE gradient norm is ~1e-16. torchattacks'
    # default ‖g‖ + 1e-10 turns each step into ~1e-6 of alpha; foolbox (max(‖g‖, 1e-12)) and the
    # entropic suite take the full step and flip the label.
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[25.0, -25.0], [-25.0, 25.0]]))
    x, y = torch.tensor([[[[0.9, 0.1]]]]), torch.tensor([0])
    (spec,) = build_suite("entropic", dataset="mnist", attacks=["l2-pgd"])
    kwargs = {**spec.kwargs, "random_start": False}
    suite_spec = AttackSpec("l2-pgd", "l2", 1.0, {**kwargs, "alpha": 0.1, "steps": 20})
    torch_default = AttackSpec("l2-pgd", "l2", 1.0, {**kwargs, "alpha": 0.1, "steps": 20, "eps_for_division": 1e-10})
    adv = run_attack(model, suite_spec, x, y, batch_size=1, seed=0, progress=False, engine="builtin")
    stalled = run_attack(model, torch_default, x, y, batch_size=1, seed=0, progress=False, engine="builtin")
    assert model(adv).argmax(1).item() == 1
    assert float((adv - x).norm()) <= 1.0 + 1e-5
    assert model(stalled).argmax(1).item() == 0
    assert float((stalled - x).abs().max()) < 1e-3


def test_default_budget_table_for_small_datasets():
    digits_code = default_budget("digits", "ibrar", "ibrar-code")
    digits_paper = default_budget("digits", "ibrar", "paper")
    assert digits_code.linf_eps == 0.1 and digits_paper.linf_eps == 0.1
    assert digits_code.pgd_step(10) == pytest.approx(0.023)
    assert default_budget("mnist", "ibrar", "ibrar-code").linf_eps == 0.1
    assert default_budget("mnist", "ibrar", "paper").linf_eps == 0.3
    assert default_budget("digits", "entropic").l2_eps == 0.45
    assert default_budget("tiny-imagenet", "entropic").l2_eps == 1.9
    assert default_budget("CIFAR_10", "ib-rar", "code").linf_eps == 0.03  # aliases
    assert list_suites() == list(SUITES) == ["ibrar", "entropic"]
    assert list_budgets("entropic") == ["paper"] and list_attacks("ibrar") == list(SUITES["ibrar"])


def test_eps_override_and_linf_range():
    spec = build_suite("ibrar", dataset="digits", eps=0.2, attacks=["pgd", "fgsm"])
    assert [s.eps for s in spec] == [0.2, 0.2] and spec[0].kwargs["alpha"] == pytest.approx(0.046)
    with pytest.raises(ValueError, match="eps"):
        build_suite("ibrar", eps=1.5)
    with pytest.raises(ValueError, match="eps"):
        AttackSpec("pgd", "linf", 1.2, {})
    with pytest.raises(ValueError, match="eps"):
        AttackSpec("fgsm", "linf", -0.1, {})
    assert AttackSpec("l2-pgd", "l2", 4.5, {}).eps == 4.5  # L2 radii may exceed 1


def test_attack_spec_validation():
    with pytest.raises(ValueError, match="eps=None"):
        AttackSpec("cw", "l2", 0.5, {})
    with pytest.raises(ValueError, match="eps"):
        AttackSpec("pgd", "linf", None, {})
    with pytest.raises(ValueError, match="kwargs"):
        AttackSpec("pgd", "linf", 0.1, {"eps": 0.1})
    with pytest.raises(ValueError, match="'pgd'"):
        AttackSpec("mystery", "linf", 0.1, {})
    with pytest.raises(ValueError, match="norm"):
        AttackSpec("pgd", "l3", 0.1, {})
    spec = AttackSpec("pgd-20", "linf", 0.1, {"steps": 20}, attack="PGD")
    assert spec.attack_class == "PGD"
    with pytest.raises(TypeError):
        spec.kwargs["steps"] = 3  # read-only


@pytest.mark.parametrize("key", ["steps", "n_restarts", "n_queries", "n_iter", "restarts", "eot_iter", "search_steps"])
@pytest.mark.parametrize(("value", "exc"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError),
                                            ("10", TypeError)])
def test_attack_spec_rejects_non_positive_iteration_counts_at_construction(key, value, exc):
    """Issue 11, item 2: never a zero-step attack that silently does nothing, nor a crash mid-suite."""
    with pytest.raises(exc, match=rf"kwargs\['{key}'\]: expected an int >= 1 \(a count of iterations\)"):
        AttackSpec("pgd", "linf", 0.03, {key: value})
    assert AttackSpec("pgd", "linf", 0.03, {key: 1}).kwargs[key] == 1


def test_inputs_on_meta_or_split_devices_and_dtype_mismatch_are_named():
    model = _model()
    x, y = _data(4)
    spec = [AttackSpec("fgsm", "linf", 0.1, {})]
    with pytest.raises(ValueError, match=r"^x: expected a tensor with values .*meta device"):
        evaluate_suite(model, torch.empty_like(x, device="meta"), y, spec, progress=False)
    with pytest.raises(ValueError, match=r"^y: expected a tensor on x's device \(cpu\), got meta"):
        evaluate_suite(model, x, torch.empty_like(y, device="meta"), spec, progress=False)
    with pytest.raises(TypeError, match=r"^x: expected dtype torch.float32 \(the dtype of .*got torch.float64"):
        evaluate_suite(model, x.double(), y, spec, progress=False)
    with pytest.raises(TypeError, match=r"^x: expected dtype torch.float64 .*got torch.float32"):
        run_attack(_model().double(), spec[0], x, y, progress=False)
    res = evaluate_suite(_model().double(), x.double(), y, spec, progress=False)  # consistent dtypes work
    assert math.isfinite(res.clean_accuracy) and 0.0 <= res["fgsm"].accuracy <= 1.0


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="'pgd', 'cw', 'fgsm', 'fab', 'nifgsm'"):
        build_suite("ibrar", attacks=["pgd", "deepfool"])
    with pytest.raises(ValueError, match="'ibrar', 'entropic'"):
        build_suite("trades")
    with pytest.raises(ValueError, match="'ibrar-code', 'paper'"):
        build_suite("ibrar", budget="huge")
    with pytest.raises(ValueError, match="'paper'"):
        build_suite("entropic", budget="ibrar-code")
    with pytest.raises(ValueError, match="'cifar10'"):
        build_suite("ibrar", dataset="imagenet")
    with pytest.raises(ValueError, match="'pgd', 'cw', 'fab', 'nifgsm'"):
        accuracy_vs_steps(_model(), *_data(4), attack="fgsm", steps=(1,), dataset="digits")


# --------------------------------------------------------------------------------------------------
# Safe execution
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fab", "pgd"])
def test_global_rng_state_is_unchanged(name):
    model = _model().eval()
    x, y = _data()
    spec = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, attacks=[name])[0]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    adv = run_attack(model, spec, x, y, batch_size=8, seed=5, progress=False)
    assert torch.equal(before, torch.get_rng_state())
    assert adv.shape == x.shape and float((adv - x).abs().max()) <= spec.eps + 1e-6
    assert float(adv.min()) >= 0 and float(adv.max()) <= 1


def test_same_seed_same_examples_and_batching_is_transparent():
    model = _model().eval()
    x, y = _data(12)
    pgd = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, pgd_steps=3, attacks=["pgd"])[0]
    a = run_attack(model, pgd, x, y, seed=1, progress=False)
    b = run_attack(model, pgd, x, y, seed=1, progress=False)
    c = run_attack(model, pgd, x, y, seed=2, progress=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    fgsm = AttackSpec("fgsm", "linf", 0.1, {})
    whole = run_attack(model, fgsm, x, y, batch_size=12, progress=False)
    parts = run_attack(model, fgsm, x, y, batch_size=5, progress=True)
    assert torch.equal(whole, parts)


@pytest.mark.parametrize("training", [True, False])
def test_model_modes_are_restored(training):
    model = _model().train(training)
    if training:
        model.drop.eval()  # a mixed state must come back exactly
    expected = _modes(model)
    x, y = _data(8)
    spec = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, pgd_steps=2, attacks=["pgd"])[0]
    run_attack(model, spec, x, y, progress=False)
    assert _modes(model) == expected
    evaluate_suite(model, x, y, [spec], progress=False)
    assert _modes(model) == expected


def test_modes_and_rng_are_restored_when_the_attack_raises():
    torch.manual_seed(0)
    model = RaisesOnGrad().train()
    model.features[1].eval()
    expected = _modes(model)
    before = torch.get_rng_state()
    x, y = _data(8)
    with pytest.raises(RuntimeError, match="boom"):
        run_attack(model, AttackSpec("pgd", "linf", 0.1, {"steps": 2, "alpha": 0.05}), x, y, progress=False)
    assert _modes(model) == expected
    assert torch.equal(before, torch.get_rng_state())


def test_ibmodel_records_nothing_during_attacks():
    torch.manual_seed(0)
    model = wrap_model(TinyCNN(), ib_layers=["features"], num_classes=NUM_CLASSES).train()
    x, y = _data(8)
    spec = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, pgd_steps=2, attacks=["pgd"])[0]
    run_attack(model, spec, x, y, progress=False)
    evaluate_suite(model, x, y, [spec, AttackSpec("fgsm", "linf", 0.1, {})], progress=False)
    assert model.num_records == 0 and model.training
    model(x)  # recording is switched back on afterwards
    assert model.num_records == 1


def test_inputs_and_labels_are_validated():
    model = _model().eval()
    x, y = _data(4)
    spec = AttackSpec("fgsm", "linf", 0.1, {})
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\]"):
        run_attack(model, spec, x * 2, y, progress=False)
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\]"):
        run_attack(model, spec, x - 0.5, y, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        run_attack(model, spec, torch.full_like(x, float("nan")), y, progress=False)
    with pytest.raises(ValueError, match="y: expected class indices < 4"):
        run_attack(model, spec, x, torch.full_like(y, 4), progress=False)
    with pytest.raises(ValueError, match="y: expected class indices of shape"):
        run_attack(model, spec, x, y[:2], progress=False)
    with pytest.raises(TypeError, match="y: expected an integer"):
        run_attack(model, spec, x, y.float(), progress=False)
    with pytest.raises(ValueError, match="device"):
        run_attack(model, spec, x, y, device="cuda", progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        run_attack(model, spec, x, y, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="attack"):
        run_attack(model, AttackSpec("x", "linf", 0.1, {}, attack="NoSuchAttack"), x, y, progress=False)


def test_import_is_lazy_and_missing_torchattacks_is_reported():
    code = (
        "import sys\n"
        "sys.modules['torchattacks'] = None\n"  # makes `import torchattacks` fail in this child process
        "import torch, ib_plugins.evaluation as ev\n"
        "from ib_plugins.errors import MissingOptionalDependencyError\n"
        "specs = ev.build_suite('ibrar', dataset='digits')\n"
        "adv = ev.run_attack(torch.nn.Linear(4, 2), specs[2], torch.rand(2, 4), torch.tensor([0, 1]), progress=False)\n"
        "print('builtin', list(adv.shape))\n"
        "try:\n"
        "    ev.run_attack(torch.nn.Linear(4, 2), specs[2], torch.rand(2, 4), torch.tensor([0, 1]), engine='torchattacks')\n"
        "except MissingOptionalDependencyError as err:\n"
        "    print('ok', \"pip install 'ib-plugins[torchattacks]'\" in str(err))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    # the built-in engine needs no torchattacks; asking for the upstream engine names the extra
    assert out.stdout.split() == ["builtin", "[2,", "4]", "ok", "True"]
    out = subprocess.run(
        [sys.executable, "-c", "import sys, ib_plugins.evaluation; print('torchattacks' in sys.modules)"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def test_identity_attack_keeps_clean_accuracy():
    v = torch.tensor([0.6, 0.9, 0.1, 0.45, 0.8])
    y = torch.tensor([0, 0, 1, 1, 1])
    x = v.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    res = evaluate_suite(MeanLinear(), x, y, [AttackSpec("fgsm", "linf", 0.0, {})], progress=False)
    r = res["fgsm"]
    assert res.clean_accuracy == 0.8
    assert (r.accuracy, r.success_rate, r.n_flipped, r.max_linf, r.mean_l2) == (0.8, 0.0, 0, 0.0, 0.0)


def test_accuracy_and_success_rate_arithmetic_on_a_constructed_case():
    # Constant 4x4 images of value v; class 0 iff v > 0.5. FGSM(0.3) moves v by 0.3 against the label.
    v = torch.tensor([0.6, 0.9, 0.1, 0.45, 0.8])
    y = torch.tensor([0, 0, 1, 1, 1])  # the last one is misclassified before the attack
    x = v.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    spec = AttackSpec("fgsm", "linf", 0.3, {})
    res = evaluate_suite(MeanLinear(), x, y, [spec], progress=False, keep_adversarial=True)
    r = res["fgsm"]
    assert (res.n, res.n_clean_correct, res.clean_accuracy) == (5, 4, 0.8)
    assert (r.n_robust, r.n_flipped, r.accuracy, r.success_rate) == (2, 2, 0.4, 0.5)
    assert r.max_linf == pytest.approx(0.3)
    assert res.adversarial["fgsm"].shape == x.shape
    m = misclassification_tendency(MeanLinear(), x, y, res.adversarial["fgsm"])
    assert m.tolist() == [[0, 1], [1, 0]]


def test_attack_result_properties():
    spec = AttackSpec("fgsm", "linf", 0.1, {})
    r = AttackResult(spec, n=10, n_robust=4, n_clean_correct=8, n_flipped=4, seconds=0.0, max_linf=0.1, mean_l2=0.3)
    assert (r.accuracy, r.success_rate) == (0.4, 0.5)
    empty = AttackResult(spec, n=3, n_robust=0, n_clean_correct=0, n_flipped=0, seconds=0.0, max_linf=0.0, mean_l2=0.0)
    assert math.isnan(empty.success_rate) and empty.to_dict()["success_rate"] is None
    with pytest.raises(ValueError, match="'fgsm'"):
        SuiteResult(n=3, n_clean_correct=0, attacks=[empty])["pgd"]


def test_noise_respects_the_norm_bound_and_leaves_the_global_rng_alone():
    x, y = _data(16)
    x[0] = 0.0
    x[1] = 1.0  # clipping at both ends
    for norm, eps in (("linf", 0.1), ("l2", 0.5)):
        g = torch.Generator().manual_seed(0)
        noisy = random_noise(x, norm=norm, eps=eps, generator=g)
        delta = (noisy - x).flatten(1)
        size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps + 1e-6 and float(noisy.min()) >= 0 and float(noisy.max()) <= 1
        assert float(size[2:].min()) > 0
    unclipped = torch.full((4, 1, 8, 8), 0.5)
    l2 = (random_noise(unclipped, norm="l2", eps=0.3, generator=torch.Generator().manual_seed(1)) - 0.5).flatten(1)
    assert torch.allclose(l2.norm(dim=1), torch.full((4,), 0.3), atol=1e-5)
    model = _model().train()
    expected = _modes(model)
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = noise_accuracy(model, x, y, norm="l2", eps=0.5, seed=3)
    b = noise_accuracy(model, x, y, norm="l2", eps=0.5, seed=3)
    assert torch.equal(before, torch.get_rng_state()) and _modes(model) == expected
    assert a == b and 0.0 <= a <= 1.0
    clean = evaluate_suite(model, x, y, [], progress=False).clean_accuracy
    assert noise_accuracy(model, x, y, norm="linf", eps=0.0) == clean
    with pytest.raises(ValueError, match="norm"):
        noise_accuracy(model, x, y, norm="l1", eps=0.1)


def test_misclassification_tendency_hand_made():
    class Pick(nn.Module):  # predicts round(2 * first pixel) among 3 classes
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            return nn.functional.one_hot(x.flatten(1)[:, 0].mul(2).round().long(), 3).float() * self.scale

    y = torch.tensor([0, 0, 1, 1, 2, 2, 0])
    x = torch.tensor([0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0]).view(-1, 1, 1, 1)  # last: wrong before the attack
    x_adv = torch.tensor([1.0, 0.5, 0.0, 0.5, 0.0, 0.0, 0.0]).view(-1, 1, 1, 1)
    counts = misclassification_tendency(Pick(), x, y, x_adv)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [[0, 1, 1], [1, 0, 0], [2, 0, 0]]
    rates = misclassification_tendency(Pick(), x, y, x_adv, normalize=True)
    assert torch.allclose(rates, torch.tensor([[0, 0.5, 0.5], [1.0, 0, 0], [1.0, 0, 0]]))
    table = tendency_markdown(counts, class_names=["a", "b", "c"])
    assert "| c | 2 | 0 | 0 | a |" in table
    assert "50.0" in tendency_markdown(rates)
    with pytest.raises(ValueError, match="x_adv"):
        misclassification_tendency(Pick(), x, y, x_adv[:3])


def test_cw_warning_fires_for_log_probabilities_only():
    x, y = _data(8)
    cw = AttackSpec("cw", "l2", None, {"c": 0.1, "kappa": 0, "steps": 2, "lr": 0.1})
    with pytest.warns(UserWarning, match="log-probabilities"):
        run_attack(_model(log_probs=True).eval(), cw, x, y, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_attack(_model().eval(), cw, x, y, progress=False)
        evaluate_suite(_model().eval(), x, y, [cw], progress=False)
    cw2 = AttackSpec("cw-b", "l2", None, {"steps": 1}, attack="CW")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate_suite(_model(log_probs=True).eval(), x, y, [cw, cw2], progress=False)
    assert sum("log-probabilities" in str(w.message) for w in caught) == 1


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------


def test_reports_serialise_and_name_the_attacks(tmp_path):
    model = _model().eval()
    x, y = _data(8)
    specs = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, pgd_steps=2, cw_steps=2,
                        attacks=["pgd", "cw", "fgsm"])
    res = evaluate_suite(model, x, y, specs, progress=False)
    payload = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert [a["name"] for a in payload["attacks"]] == ["pgd", "cw", "fgsm"]
    assert payload["attacks"][1]["eps"] is None and payload["attacks"][0]["attack"] == "PGD"
    md = res.to_markdown()
    assert all(f"| {name} |" in md for name in ("clean", "pgd", "cw", "fgsm"))
    # the paper's CW is a fixed-c CW-L2, neither bounded nor minimum-norm: labelled so, never "unbounded"
    assert "| cw | l2 | none (fixed c=0.1) |" in md and "unbounded" not in md
    assert "cw: fixed-c CW-L2 as in the paper (torchattacks CW, c=0.1, kappa=0, 2 steps, lr 0.1" in md
    other = evaluate_suite(_model(seed=1).eval(), x, y, specs[2:], progress=False)
    table = compare_markdown({"CE": res, "IB-RAR": other})
    header, rule, *rows = table.splitlines()
    assert header == "| Model | Clean | pgd | cw (fixed c=0.1) | fgsm |" and rule == "|---|---|---|---|---|"
    assert rows[0].startswith("| CE | ") and rows[1].startswith("| IB-RAR | ") and "| - |" in rows[1]
    cw = res["cw"]
    assert f"{100 * cw.accuracy:.2f} (" in rows[0]  # accuracy with the median L2 of the successes
    assert ("no success" in rows[0]) == (cw.median_l2_success is None)
    assert "cw: fixed-c CW-L2 as in the paper" in table
    assert f"{100 * res.clean_accuracy:.2f}" in rows[0]
    with pytest.raises(ValueError, match="results"):
        compare_markdown({})


def test_accuracy_vs_steps_and_plot(tmp_path):
    model = _model().eval()
    x, y = _data(8)
    steps, accs = accuracy_vs_steps(model, x, y, attack="pgd", steps=(1, 3), dataset="digits",
                                    num_classes=NUM_CLASSES, progress=False)
    assert steps == [1, 3] and len(accs) == 2 and all(0.0 <= a <= 1.0 for a in accs)
    _, nif = accuracy_vs_steps(model, x, y, attack="nifgsm", steps=(2,), dataset="digits", progress=False)
    assert len(nif) == 1
    path = plot_accuracy_vs_steps({"CE": (steps, accs), "other": ([1, 3], [0.5, 0.25])}, tmp_path / "sub" / "f.png",
                                  title="PGD")
    data = path.read_bytes()
    assert len(data) > 100 and data[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="curves"):
        plot_accuracy_vs_steps({"CE": ([1, 2], [0.5])}, tmp_path / "g.png")


# --------------------------------------------------------------------------------------------------
# Cost: no forward passes beyond what a hand-written torchattacks loop makes
# --------------------------------------------------------------------------------------------------


class CountingCNN(TinyCNN):
    """Counts the samples it has been run on."""

    samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        return super().forward(x)


def test_evaluate_suite_runs_no_forward_beyond_a_plain_torchattacks_loop():
    import torchattacks

    x, y = _data(24)
    specs = [AttackSpec("fgsm", "linf", 0.1, {}), AttackSpec("pgd", "linf", 0.1, {"alpha": 0.05, "steps": 2})]
    torch.manual_seed(0)
    model = CountingCNN().eval()
    # By hand: one clean pass, then per attack the attack itself and one pass over its outputs.
    with torch.no_grad():
        model(x[:8]), model(x[8:16]), model(x[16:])
    for spec in specs:
        atk = getattr(torchattacks, spec.attack_class)(model, **spec.constructor_kwargs())
        for i in range(0, 24, 8):
            adv = atk(x[i : i + 8], y[i : i + 8])
            with torch.no_grad():
                model(adv)
    by_hand, model.samples = model.samples, 0
    evaluate_suite(model, x, y, specs, batch_size=8, progress=False)
    assert model.samples == by_hand == 24 * (1 + (1 + 1) + (2 + 1))


def test_evaluate_suite_checks_labels_against_the_model_outputs():
    x, y = _data(8)
    with pytest.raises(ValueError, match="y: expected class indices < 4 \\(the model's outputs\\), got 4"):
        evaluate_suite(_model().eval(), x, torch.full_like(y, 4), [AttackSpec("fgsm", "linf", 0.1, {})], progress=False)


def test_median_l2_of_successes_and_the_corrected_cw_l2_suite_attack():
    model = _model().eval()
    x, y = _data(16)
    specs = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, cw_steps=30, attacks=["fgsm", "cw-l2"])
    assert [s.name for s in specs] == ["fgsm", "cw-l2"] and specs[1].attack == "adaptive:cw-l2"
    assert "corrected margin" in specs[1].describe() and "minimum-norm" in specs[1].describe()
    assert "cw-l2" in list_attacks("entropic", extras=True) and "cw-l2" not in list_attacks("entropic")
    res = evaluate_suite(model, x, y, specs, progress=False, keep_adversarial=True)
    for r in res.attacks:
        clean_ok = model(x).argmax(1) == y
        adv_ok = model(res.adversarial[r.name]).argmax(1) == y
        flipped = clean_ok & ~adv_ok
        norms = (res.adversarial[r.name] - x).flatten(1).norm(dim=1)
        assert r.n_flipped == int(flipped.sum())
        if r.n_flipped:
            assert r.median_l2_success == pytest.approx(float(norms[flipped].median()), rel=1e-5)
        else:
            assert r.median_l2_success is None
    cw = res["cw-l2"]
    assert cw.n_flipped == cw.n_clean_correct > 0  # a minimum-norm attack breaks every correct sample
    payload = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert payload["attacks"][1]["median_l2_success"] == cw.median_l2_success
    assert payload["attacks"][1]["description"] == specs[1].describe()
    md = res.to_markdown()
    assert "| cw-l2 | l2 | none (minimum-norm) |" in md and "cw-l2: CW-L2 with the corrected margin" in md
    with pytest.raises(ValueError, match="attacks: expected one of .*'cw-l2'"):
        build_suite("ibrar", dataset="digits", attacks=["cw-l3"])
