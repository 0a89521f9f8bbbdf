"""Adversarial training with ART + the IB-RAR regulariser, on scikit-learn's 8x8 digits.

Trains a small CNN (:class:`ib_plugins.models.DigitsCNN`) twice, with ART's Madry PGD trainer and
with ART's TRADES trainer, each with the IB term (HSIC bottleneck on the model's "robust" layers)
added through :class:`ib_plugins.adapters.art_training.IBCrossEntropyLoss`, then prints clean and
PGD accuracy on the test split.

Run::

    python examples/art_adversarial_training.py            # ~30-60 s on 2 CPU cores
    python examples/art_adversarial_training.py --smoke    # a few seconds (tiny subset, 1 epoch)

Needs ``pip install 'ib-plugins[art,data]'`` (adversarial-robustness-toolbox, scikit-learn).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ib_plugins import wrap_model
from ib_plugins.data import load_dataset
from ib_plugins.models import DigitsCNN


def _numpy(dataset) -> tuple[np.ndarray, np.ndarray]:
    x, y = dataset.tensors
    return x.numpy().astype(np.float32), y.numpy()


def _accuracy(classifier, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(classifier.predict(x, batch_size=256), axis=1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny subset and 1 epoch (a few seconds)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs per trainer")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget on [0, 1] pixels")
    parser.add_argument("--beta-ib", type=float, default=0.08, help="beta of the IB term (authors: 0.08)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: this 8x8 model is too small to gain from more, and extra threads "
        "spin-wait badly on a busy machine)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from art.attacks.evasion import ProjectedGradientDescent

    from ib_plugins.adapters.art_training import (
        IBAdversarialTrainerMadryPGD,
        IBAdversarialTrainerTRADESPyTorch,
        make_art_classifier,
    )

    train_limit, test_limit = (128, 64) if args.smoke else (None, None)
    epochs = 1 if args.smoke else args.epochs
    train_steps, eval_steps = (2, 3) if args.smoke else (5, 10)
    x_train, y_train = _numpy(load_dataset("digits", split="train", limit=train_limit, seed=args.seed))
    x_test, y_test = _numpy(load_dataset("digits", split="test", limit=test_limit, seed=args.seed))
    print(f"digits: {len(x_train)} train / {len(x_test)} test images, eps={args.eps}, {epochs} epoch(s)")

    for name in ("Madry PGD", "TRADES"):
        torch.manual_seed(args.seed)  # an example may seed globally; ART shuffles with numpy's RNG
        np.random.seed(args.seed)
        ib_model = wrap_model(DigitsCNN(num_classes=10), "robust", beta=args.beta_ib, num_classes=10)
        optimizer = torch.optim.SGD(ib_model.parameters(), lr=0.05, momentum=0.9)
        classifier = make_art_classifier(
            ib_model, optimizer=optimizer, input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0)
        )
        t0 = time.perf_counter()
        if name == "Madry PGD":
            trainer = IBAdversarialTrainerMadryPGD(
                classifier, nb_epochs=epochs, batch_size=args.batch_size, eps=args.eps,
                eps_step=2.5 * args.eps / train_steps, max_iter=train_steps,
            )
            trainer.fit(x_train, y_train)
        else:
            attack = ProjectedGradientDescent(
                classifier, eps=args.eps, eps_step=2.5 * args.eps / train_steps, max_iter=train_steps, verbose=False
            )
            trainer = IBAdversarialTrainerTRADESPyTorch(classifier, attack, beta=6.0)
            trainer.fit(x_train, y_train, batch_size=args.batch_size, nb_epochs=epochs)
        train_s = time.perf_counter() - t0

        clean = _accuracy(classifier, x_test, y_test)
        pgd = ProjectedGradientDescent(
            classifier, eps=args.eps, eps_step=2.5 * args.eps / eval_steps, max_iter=eval_steps, verbose=False
        )
        x_adv = pgd.generate(x_test, y=y_test)
        robust = _accuracy(classifier, x_adv, y_test)
        ib_terms = classifier.loss.num_ib_terms
        print(
            f"{name:9s} + IB: clean accuracy {clean:.3f}, PGD accuracy {robust:.3f} (PGD-{eval_steps}, "
            f"eps={args.eps}); {ib_terms} IB-regularised batches, trained in {train_s:.1f} s"
        )
        ib_model.unwrap()  # remove the hooks: the plain DigitsCNN is ready for export or evaluation


if __name__ == "__main__":
    main()
