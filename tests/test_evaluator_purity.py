"""Every evaluator leaves the caller's training state alone (issue 10, items 6 and 7).

An evaluation run between ``loss.backward()`` and ``optimizer.step()`` must leave every parameter's
``.grad`` (None included; ideally the very same tensor object), ``requires_grad``, the train/eval flag
of every submodule and the global RNGs (torch, numpy, Python ``random``) as it found them. Loading
any kind of checkpoint the trainer writes must not move the global RNGs either.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ib_plugins import wrap_model
from ib_plugins.evaluation import list_attacks

np = pytest.importorskip("numpy", reason="numpy is needed to check that numpy's global RNG is left alone")
pytest.importorskip("torchattacks", reason="torchattacks (pip install 'ib-plugins[attacks]') is not installed")

NUM_CLASSES = 4
NO_AUTOATTACK = "pyautoattack (pip install 'ib-plugins[autoattack]') is not installed"
LAYERS = ["act1", "act2"]


pytestmark = pytest.mark.usefixtures("one_thread")


class _Net(nn.Module):
    """conv -> ReLU -> dropout -> fc -> ReLU -> head on [B, 1, 4, 4]; ``conv.bias`` is frozen, ``spare`` unused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act1 = nn.ReLU()
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(4 * 4 * 4, 8)
        self.act2 = nn.ReLU()
        self.head = nn.Linear(8, NUM_CLASSES)
        self.spare = nn.Linear(2, 2)  # requires grad, never used: its .grad stays None
        self.conv.bias.requires_grad_(False)  # frozen: .grad None, requires_grad False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.act1(self.conv(x))).flatten(1)
        return self.head(self.act2(self.fc(h)))


def _setup(seed: int = 0):
    """A wrapped model after ``loss.backward()`` (before ``step()``), in a mixed train/eval state."""
    torch.manual_seed(seed)  # the training forward's dropout draws from the global RNG
    g = torch.Generator().manual_seed(seed)
    net = _Net()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    model = wrap_model(net, LAYERS, alpha=0.01, beta=0.1, num_classes=NUM_CLASSES)
    x = torch.rand(8, 1, 4, 4, generator=g)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # every example is attacked: the attacks' gradients are not 0
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    out = model(x)
    loss = F.cross_entropy(out, y) + model.ib_loss(x, y, output=out)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    net.fc.weight.grad.add_(1.0)  # a gradient that is not a fresh backward's, to tell it apart
    net.head.bias.grad = None  # used in every forward, requires grad, but no .grad: must stay None
    net.drop.eval()  # a mixed state must come back module by module
    return model, net, opt, x, y


def _snapshot(model: nn.Module) -> dict[str, Any]:
    params = dict(model.named_parameters())
    return {
        "grad_objects": {n: p.grad for n, p in params.items()},
        "grad_values": {n: None if p.grad is None else p.grad.clone() for n, p in params.items()},
        "requires_grad": {n: p.requires_grad for n, p in params.items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def _assert_untouched(model: nn.Module, before: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    for name, p in params.items():
        assert p.grad is before["grad_objects"][name], f"{name}: .grad is another object (or None) after the evaluation"
        expected = before["grad_values"][name]
        assert (p.grad is None) == (expected is None), name
        if expected is not None:
            assert torch.equal(p.grad, expected), f"{name}: .grad values changed"
    assert {n: p.requires_grad for n, p in params.items()} == before["requires_grad"]
    assert {n: m.training for n, m in model.named_modules()} == before["training"]
    assert torch.equal(torch.get_rng_state(), before["torch_rng"]), "the global torch RNG moved"
    if before["cuda_rng"] is not None:
        assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), before["cuda_rng"]))
    np_before, np_after = before["numpy_rng"], np.random.get_state()
    same_numpy = np_before[0] == np_after[0] and np.array_equal(np_before[1], np_after[1])
    assert same_numpy and np_before[2:] == np_after[2:], "numpy's global RNG moved"
    assert random.getstate() == before["python_rng"], "Python's random moved"


# --------------------------------------------------------------------------------------------------
# The evaluators, each as (model, x, y, tmp_path) -> None
# --------------------------------------------------------------------------------------------------
def _suite(suite: str, attack: str) -> Callable[..., None]:
    def run(model, x, y, tmp_path):
        from ib_plugins.evaluation import build_suite, evaluate_suite

        specs = build_suite(suite, dataset="digits", num_classes=NUM_CLASSES, attacks=[attack], pgd_steps=2, cw_steps=3)
        evaluate_suite(model, x, y, specs, batch_size=4, progress=False)

    return run


def _run_attack(attack: str) -> Callable[..., None]:
    def run(model, x, y, tmp_path):
        from ib_plugins.evaluation import build_suite, run_attack

        (spec,) = build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, attacks=[attack], cw_steps=3)
        run_attack(model, spec, x, y, batch_size=4, progress=False)

    return run


AA_OPTIONS = {
    "apgd": {"n_iter": 2, "n_restarts": 1},
    "apgd_targeted": {"n_iter": 2, "n_target_classes": NUM_CLASSES - 1},
    "fab": {"n_iter": 2, "n_restarts": 1, "n_target_classes": NUM_CLASSES - 1},
    "square": {"n_queries": 5},
}


def _autoattack(attack: str) -> Callable[..., None]:
    def run(model, x, y, tmp_path):
        pytest.importorskip("pyautoattack", reason=NO_AUTOATTACK)
        from ib_plugins.adapters.autoattack_eval import run_autoattack

        run_autoattack(model, x, y, eps=0.1, version="custom", attacks=[attack], attack_options=AA_OPTIONS,
                       batch_size=8, progress=False)

    return run


def _autoattack_compat(model, x, y, tmp_path):
    pytest.importorskip("pyautoattack", reason=NO_AUTOATTACK)
    from ib_plugins.adapters.autoattack_eval import AutoAttackCompat

    adversary = AutoAttackCompat(model, norm="Linf", eps=0.1, version="custom", attacks_to_run=["fab", "fab-t"], seed=0,
                                 verbose=False)
    for attr, value in AA_OPTIONS["fab"].items():
        setattr(adversary.fab, attr, value)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()  # upstream's API leaves the modes to the caller (robustbench's benchmark sets eval)
    try:
        adversary.run_standard_evaluation(x, y, bs=8)
        adversary.run_standard_evaluation_individual(x, y, bs=8)
    finally:
        for m, training in modes:
            m.training = training


def _leaderboard(model, x, y, tmp_path):
    pytest.importorskip("pyautoattack", reason=NO_AUTOATTACK)
    from ib_plugins.adapters.robustbench_eval import evaluate_for_leaderboard

    evaluate_for_leaderboard(model, x, y, dataset="digits", eps=0.1, model_name="tiny", batch_size=8, version="custom",
                             attacks=["fab-t"], attack_options=AA_OPTIONS, attack_suite=["cw", "fab"],
                             suite_options={"cw_steps": 3}, out_dir=tmp_path, progress=False)


def _audit(model, x, y, tmp_path):
    from ib_plugins.audit import run_audit

    run_audit(model, out_dir=None, quick=True, x=x, y=y, eps=0.1, eps_grid=[0.05, 0.1, 0.5], surrogate=model,
              eot_samples=2, entropic_config={"layers": ["act1"], "reference": 1.0}, batch_size=8, progress=False)


def _adaptive(name: str) -> Callable[..., None]:
    def run(model, x, y, tmp_path):
        from ib_plugins.adaptive import run_adaptive_attack

        kwargs: dict[str, Any] = {"steps": 2, "eot_samples": 2, "batch_size": 4}
        if name == "pgd-entropic":
            kwargs["entropic_config"] = {"layers": ["act1"], "reference": 1.0}
        if name != "cw-l2":
            kwargs["eps"] = 0.1
        run_adaptive_attack(model, name, x, y, **kwargs)

    return run


def _evaluate_specs(model, x, y, tmp_path):
    from ib_plugins.adaptive import EOTModel, adaptive_spec, evaluate_specs
    from ib_plugins.evaluation import AttackSpec

    specs = [AttackSpec("cw", "l2", None, {"c": 0.1, "kappa": 0, "steps": 3, "lr": 0.1}),
             adaptive_spec("pgd-ib", eps=0.1, steps=2), adaptive_spec("cw-l2", steps=3)]
    evaluate_specs(model, x, y, specs, batch_size=4)
    evaluate_specs(EOTModel(model, eot_samples=2), x, y, [adaptive_spec("pgd-margin", eps=0.1, steps=2)], batch_size=4)


def _is_deterministic(model, x, y, tmp_path):
    from ib_plugins.adaptive import is_deterministic

    assert is_deterministic(model, x)


def _entropy_reference(model, x, y, tmp_path):
    from ib_plugins.entropic import compute_reference_entropy_flow

    compute_reference_entropy_flow(model, [(x[:4], y[:4]), (x[4:], y[4:])], layers=["model.act1", "model.act2"],
                                   progress=False)


def _small_metrics(model, x, y, tmp_path):
    from ib_plugins.evaluation import accuracy_vs_steps, misclassification_tendency, noise_accuracy

    noise_accuracy(model, x, y, norm="linf", eps=0.1)
    accuracy_vs_steps(model, x, y, suite="ibrar", attack="cw", steps=[1, 2], dataset="digits", num_classes=NUM_CLASSES,
                      progress=False)
    misclassification_tendency(model, x, y, x.flip(0), num_classes=NUM_CLASSES)


EVALUATORS: dict[str, Callable[..., None]] = {
    **{f"suite-ibrar-{a}": _suite("ibrar", a) for a in list_attacks("ibrar")},
    **{f"suite-entropic-{a}": _suite("entropic", a) for a in list_attacks("entropic")},
    "run_attack-cw": _run_attack("cw"),
    "run_attack-fab": _run_attack("fab"),
    **{f"autoattack-{a}": _autoattack(a) for a in ("apgd-ce", "apgd-t", "fab", "fab-t", "square")},
    "autoattack-compat": _autoattack_compat,
    "leaderboard": _leaderboard,
    "audit": _audit,
    **{f"adaptive-{a}": _adaptive(a) for a in ("pgd-ce", "pgd-margin", "pgd-ib", "pgd-entropic", "cw-l2")},
    "evaluate_specs": _evaluate_specs,
    "is_deterministic": _is_deterministic,
    "entropy-reference": _entropy_reference,
    "noise-steps-tendency": _small_metrics,
}


@pytest.mark.parametrize("name", list(EVALUATORS))
def test_evaluation_between_backward_and_step_changes_nothing(name, tmp_path):
    model, net, opt, x, y = _setup()
    assert net.conv.bias.grad is None and not net.conv.bias.requires_grad  # frozen
    assert net.spare.weight.grad is None and net.spare.weight.requires_grad  # unused
    assert net.head.bias.grad is None and net.head.bias.requires_grad  # used, without a grad
    assert net.fc.weight.grad is not None
    # The update the optimiser makes without any evaluation in between.
    control, _, control_opt, _, _ = _setup()
    control_opt.step()
    expected = {n: p.detach() for n, p in control.named_parameters()}
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(11)
    before = _snapshot(model)

    EVALUATORS[name](model, x, y, tmp_path)

    _assert_untouched(model, before)
    opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), expected[n]), f"{n}: the step after the evaluation differs"
    assert model.num_records <= 1  # the training forward's record at most; the evaluation recorded nothing


def test_grads_and_flags_come_back_after_an_exception_inside_the_evaluation():
    from ib_plugins._context import _inference_modes

    model, net, _, x, _ = _setup()
    before = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"), _inference_modes(model):
        assert all(p.grad is None for p in model.parameters())  # set aside, not accumulated into
        model(x).sum().backward()
        net.head.weight.requires_grad_(False)
        torch.rand(3)
        np.random.rand(2)
        random.random()
        raise RuntimeError("boom")
    _assert_untouched(model, before)


class _NoisyNet(nn.Module):
    """A randomised defence: its eval forward draws from the torch, numpy and Python global RNGs."""

    def __init__(self) -> None:
        super().__init__()
        self.act = nn.ReLU()
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn_like(x) * 0.01 + float(np.random.rand()) * 0.0 + random.random() * 0.0
        return self.fc(self.act(x + noise).flatten(1))


def test_a_randomised_model_does_not_move_the_global_rngs_during_evaluation():
    from ib_plugins.entropic import compute_reference_entropy_flow
    from ib_plugins.evaluation import build_suite, evaluate_suite, misclassification_tendency, noise_accuracy

    net = _NoisyNet()
    x, y = torch.rand(8, 1, 4, 4), torch.arange(8) % NUM_CLASSES
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    before = _snapshot(net)
    evaluate_suite(net, x, y, build_suite("ibrar", dataset="digits", num_classes=NUM_CLASSES, attacks=["fgsm"]),
                   progress=False)  # its clean and adversarial predictions run unseeded
    noise_accuracy(net, x, y, norm="linf", eps=0.1)
    misclassification_tendency(net, x, y, x.flip(0), num_classes=NUM_CLASSES)
    compute_reference_entropy_flow(net, [(x, y)], layers=["act"], progress=False)
    _assert_untouched(net, before)


# --------------------------------------------------------------------------------------------------
# Item 7: loading checkpoints leaves the global RNGs alone
# --------------------------------------------------------------------------------------------------
CHECKPOINT_KINDS = {
    "ce": {"method": "ce"},
    "ib": {"method": "ce", "ib": True},
    "ib-mask": {"method": "ce", "ib": True, "mask": "code"},
    "mask-only": {"method": "ce", "mask": "paper"},
    "pgd-at-ib": {"method": "pgd-at", "ib": True},
    "trades-ib": {"method": "trades", "ib": True},
    "mart": {"method": "mart"},
    "hbar": {"method": "hbar"},
    "vib": {"method": "vib"},
    "entropic": {"method": "entropic", "init_checkpoint": "pretrained.pt"},
    "cifar-keras-cnn": {"method": "ce", "dataset": "cifar10", "model": "keras-cifar-cnn"},
}


def _write_checkpoint(path, overrides: dict[str, Any]) -> None:
    """What :class:`~ib_plugins.training.Trainer` writes (its ``_checkpoint`` payload, no optimizer)."""
    from ib_plugins.training import TrainConfig, build_model, resolve_config, save_checkpoint
    from ib_plugins.wrap import IBModel

    config = resolve_config(TrainConfig(**overrides))
    trainable, base = build_model(config)
    save_checkpoint(path, {
        "format": 1,
        "epoch": 1,
        "model": trainable.state_dict() if config.method == "vib" else base.state_dict(),
        "ib_state": trainable.state_dict() if isinstance(trainable, IBModel) else None,
        "config": config.to_dict(),
        "history": [],
        "extra": {"reference": 0.5 if config.method == "entropic" else None},
    })


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
def test_loading_any_checkpoint_leaves_the_global_rngs_alone(kind, tmp_path):
    from ib_plugins.adaptive import load_attack_target
    from ib_plugins.training import load_checkpoint, load_model_from_checkpoint

    path = tmp_path / "checkpoint.pt"
    _write_checkpoint(path, CHECKPOINT_KINDS[kind])
    torch.manual_seed(1234)
    np.random.seed(5)
    random.seed(6)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(1234)
    np.random.seed(5)
    random.seed(6)
    load_checkpoint(path)
    model, config, _ = load_model_from_checkpoint(path)
    target = load_attack_target(path)
    assert not model.training and not target.model.training
    if kind == "entropic":
        assert target.entropic_config is not None
    if config.ib:
        assert target.ib_config is not None
    after = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(after[0], expected[0]), "loading moved the global torch RNG"
    assert np.array_equal(after[1], expected[1]) and after[2] == expected[2]
