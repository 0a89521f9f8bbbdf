"""Wrap a model with ib_plugins and train it in a plain PyTorch loop.

Trains a small CNN on scikit-learn's bundled 8x8 digits twice from the same seed: with
cross-entropy only, and with cross-entropy + IB-RAR's HSIC bottleneck on the robust layers and the
channel mask (authors' code mode). Prints both losses and accuracies (clean and FGSM).

    python examples/wrap_and_train.py            # ~20 s on 2 CPU cores
    python examples/wrap_and_train.py --smoke    # a few seconds
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import ib_plugins
from ib_plugins.data import load_dataset, make_loader
from ib_plugins.models import DigitsCNN


def fgsm_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    """Accuracy under a one-step L-inf attack (written out here to keep the example self-contained)."""
    model.eval()
    x_adv = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
    with torch.no_grad():
        x_adv = (x + eps * grad.sign()).clamp(0, 1)
        return float((model(x_adv).argmax(1) == y).float().mean())


def train(use_ib: bool, *, epochs: int, limit: int | None, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)  # an example script may own the global RNG
    train_set = load_dataset("digits", split="train", limit=limit)
    x_test, y_test = load_dataset("digits", split="test").tensors
    net = DigitsCNN(num_classes=10)
    model = (
        ib_plugins.wrap_model(net, ib_layers="robust", num_classes=10, mask="code", y_kernel="linear")
        if use_ib
        else net
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = make_loader(train_set, batch_size=50, shuffle=True, seed=seed, drop_last=True)
    for _ in range(epochs):
        model.train()
        if use_ib:
            model.start_epoch()
        for x, y in loader:
            if use_ib:
                with model.labels(y):  # the channel mask needs the labels of this batch
                    logits = model(x)
                ce = F.cross_entropy(logits, y)
                loss = ce + model.ib_loss(x, y)
            else:
                logits = model(x)
                ce = loss = F.cross_entropy(logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        clean = float((model(x_test).argmax(1) == y_test).float().mean())
    result = {"final_ce": float(ce.detach()), "final_loss": float(loss.detach()), "clean_acc": clean, "fgsm_acc": fgsm_accuracy(model, x_test, y_test, 0.1)}
    if use_ib:
        model.unwrap()  # no hooks left on `net`
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (a few seconds)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    epochs = args.epochs or (1 if args.smoke else 15)
    limit = 300 if args.smoke else None
    t0 = time.perf_counter()
    rows = {name: train(use_ib, epochs=epochs, limit=limit, seed=args.seed) for name, use_ib in (("CE", False), ("CE + IB-RAR", True))}
    print(f"{'model':<14}{'final CE':>10}{'final loss':>12}{'clean acc':>11}{'FGSM acc (eps=0.1)':>20}")
    for name, r in rows.items():
        print(f"{name:<14}{r['final_ce']:>10.4f}{r['final_loss']:>12.4f}{r['clean_acc']:>11.3f}{r['fgsm_acc']:>20.3f}")
    print(f"({epochs} epochs each, {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
