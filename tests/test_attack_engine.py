"""The built-in attack engine against torchattacks: same adversarial examples, same suite numbers.

Deterministic attacks (FGSM, BIM, NI-FGSM, PGD without random start, and the fixed-c CW, which has
no randomness) must give the same adversarial examples to 1e-6. The random starts draw from the
global generator exactly as torchattacks does, so under the same seed PGD and PGD-L2 match too.
Randomised attacks are also compared as the issue asks: robust accuracies within each other's 95 %
interval on more than 500 held-out digits images.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from ib_plugins import attack_engine
from ib_plugins.evaluation import AttackSpec, build_suite, evaluate_suite, run_attack
from ib_plugins.stats import wilson_interval

torchattacks = pytest.importorskip(
    "torchattacks", reason="torchattacks (pip install 'ib-plugins[torchattacks]') is the engine compared against"
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).eval()


def _data(n: int = 24, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


SPECS = [
    AttackSpec("fgsm", "linf", 0.1),
    AttackSpec("bim", "linf", 0.1, {"alpha": 0.02, "steps": 5}),
    AttackSpec("nifgsm", "linf", 0.1, {"alpha": 0.02, "steps": 5, "decay": 1.0}),
    AttackSpec("pgd-nors", "linf", 0.1, {"alpha": 0.03, "steps": 5, "random_start": False}, attack="PGD"),
    AttackSpec("pgd", "linf", 0.1, {"alpha": 0.03, "steps": 5, "random_start": True}),
    AttackSpec("l2-pgd", "l2", 0.5, {"alpha": 0.1, "steps": 5, "random_start": True}),
    AttackSpec("l2-pgd-fb", "l2", 0.5, {"alpha": 0.1, "steps": 5, "random_start": True, "eps_for_division": 1e-30},
               attack="PGDL2"),
    AttackSpec("cw", "l2", None, {"c": 1.0, "kappa": 0, "steps": 30, "lr": 0.05}),
    AttackSpec("cw-c01", "l2", None, {"c": 0.1, "kappa": 0, "steps": 200, "lr": 0.1}, attack="CW"),
]


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_builtin_matches_torchattacks_example_for_example(spec):
    model = _tiny()
    x, y = _data()
    ours = run_attack(model, spec, x, y, batch_size=10, seed=3, progress=False, engine="builtin")
    theirs = run_attack(model, spec, x, y, batch_size=10, seed=3, progress=False, engine="torchattacks")
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0), float((ours - theirs).abs().max())
    assert not torch.equal(ours, x) or spec.attack_class == "CW"  # the attack moved the inputs


def test_fixed_c_cw_keeps_the_early_abort_and_leaves_no_parameter_gradients():
    model = _tiny()
    x, y = _data()
    adv = attack_engine.cw_fixed_c(model, x, y, c=0.1, steps=200, lr=0.1)
    assert all(p.grad is None for p in model.parameters())
    # torchattacks' CW on the same inputs: identical, early abort included
    ta = torchattacks.CW(model, c=0.1, kappa=0, steps=200, lr=0.1)
    assert torch.allclose(adv, ta(x, y), atol=1e-6)


def test_builtin_engine_needs_no_torchattacks_and_names_unknown_classes():
    model, (x, y) = _tiny(), _data(6)
    with pytest.raises(ValueError, match="the built-in engine runs .*got 'OnePixel'"):
        attack_engine.run_builtin("OnePixel", model, x, y, {})
    with pytest.raises(ValueError, match="the built-in pgd takes eps, alpha, steps, random_start, got also"):
        attack_engine.run_builtin("PGD", model, x, y, {"eps": 0.1, "alpha": 0.1, "steps": 1, "bogus": 1})
    with pytest.raises(ValueError, match="engine: expected one of 'builtin', 'torchattacks'"):
        run_attack(model, SPECS[0], x, y, engine="foolbox", progress=False)


# -- a trained digits CNN: the whole IB-RAR suite with both engines ---------------------------------------


@pytest.fixture(scope="module")
def digits_model_and_heldout():
    from ib_plugins.data import load_dataset
    from ib_plugins.training import TrainConfig, Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            trainer = Trainer(TrainConfig(epochs=4, batch_size=50, seed=0, train_limit=800), out_dir=folder,
                              progress=False)
            trainer.fit()
            model = trainer.eval_model().eval()
    finally:
        torch.set_num_threads(threads)
    # held out: the test split plus the training images the 800-image subset did not use
    test_x, test_y = load_dataset("digits", split="test").tensors
    train_x, train_y = load_dataset("digits", split="train").tensors
    used = load_dataset("digits", split="train", limit=800, seed=0).tensors[0]
    used_rows = {tuple(row.flatten().tolist()) for row in used}
    keep = torch.tensor([tuple(row.flatten().tolist()) not in used_rows for row in train_x])
    x = torch.cat([test_x, train_x[keep]])
    y = torch.cat([test_y, train_y[keep]])
    return model, x, y


@pytest.mark.slow
def test_ibrar_suite_on_a_trained_cnn_agrees_across_engines(digits_model_and_heldout):
    model, x, y = digits_model_and_heldout
    assert x.shape[0] >= 500
    specs = build_suite("ibrar", dataset="digits", num_classes=10)
    ours = evaluate_suite(model, x, y, specs, seed=0, progress=False, engine="builtin", keep_adversarial=True)
    theirs = evaluate_suite(model, x, y, specs, seed=0, progress=False, engine="torchattacks", keep_adversarial=True)
    assert ours.engine == "builtin" and theirs.engine == "torchattacks"
    n = x.shape[0]
    for a, b in zip(ours.attacks, theirs.attacks):
        low, high = wilson_interval(b.n_robust, n)
        assert low <= a.accuracy <= high, (a.name, a.accuracy, b.accuracy)
        low, high = wilson_interval(a.n_robust, n)
        assert low <= b.accuracy <= high, (a.name, a.accuracy, b.accuracy)
    for name in ("pgd", "cw", "fgsm", "nifgsm"):  # seeded identically: the same examples
        assert torch.allclose(ours.adversarial[name], theirs.adversarial[name], atol=1e-5), name
