"""Evaluate IB-RAR models with AutoAttack and write a RobustBench-style leaderboard.

Trains a small CNN on scikit-learn's bundled 8x8 digits twice from the same seed (cross-entropy
only, and cross-entropy + IB-RAR's HSIC bottleneck on the robust layers), evaluates both with
AutoAttack on a test subset via ``evaluate_for_leaderboard`` (APGD-CE + APGD-T by default,
the full standard AutoAttack with ``--standard``) and writes into ``--out``:

* ``model_info/digits/Linf/<model>.json``: RobustBench's model-info schema + the IB settings;
* ``leaderboard.md`` / ``leaderboard.html``: the ranked table (open the HTML in a browser and
  click a column header to sort);
* ``aa_state/<model>/chunk_*.json``: per-batch AutoAttack results; run the script again with
  the same ``--out`` and the finished batches are not attacked again.

A model-info file already in ``--out`` from a run with other settings (another ε, number of
examples, or model) is not silently merged: the script stops and names what differs; pass
``--overwrite`` to replace it.

    python examples/leaderboard_eval.py --out results/              # ~30 s on 2 CPU cores
    python examples/leaderboard_eval.py --out results/ --standard   # RobustBench's standard AutoAttack, ~1.5 min
    python examples/leaderboard_eval.py --smoke                     # a few seconds (8 examples, APGD-CE only)
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ib_plugins
from ib_plugins.adapters.robustbench_eval import evaluate_for_leaderboard
from ib_plugins.data import load_dataset, make_loader
from ib_plugins.leaderboard import load_entries, render_leaderboard, render_markdown
from ib_plugins.models import DigitsCNN


def train(use_ib: bool, *, epochs: int, limit: int | None, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # an example script may own the global RNG
    train_set = load_dataset("digits", split="train", limit=limit)
    net = DigitsCNN(num_classes=10)
    model = ib_plugins.wrap_model(net, ib_layers="robust", num_classes=10) if use_ib else net
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = make_loader(train_set, batch_size=50, shuffle=True, seed=seed, drop_last=True)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            if use_ib:
                loss = loss + model.ib_loss(x, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI (a few seconds)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: a new temporary folder)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 4, smoke 1)")
    parser.add_argument("--n-examples", type=int, default=None, help="test examples to attack (default 16, smoke 8)")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf radius (digits pixels are in [0, 1])")
    parser.add_argument("--standard", action="store_true",
                        help="run standard AutoAttack (adds FAB-T and Square: about 1 min more on 2 CPU cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace model-info files in --out written by a run with other settings")
    args = parser.parse_args()
    out = args.out if args.out is not None else Path(tempfile.mkdtemp(prefix="ib_leaderboard_"))
    epochs = args.epochs or (1 if args.smoke else 4)
    n_examples = args.n_examples or (8 if args.smoke else 16)
    if args.smoke:  # APGD-CE with 10 iterations: a functional check, not a robustness number
        aa = {"version": "custom", "attacks": ["apgd-ce"], "attack_options": {"apgd": {"n_iter": 10, "n_restarts": 1}}}
    elif args.standard:  # RobustBench's evaluation: APGD-CE, APGD-T, FAB-T, Square (~20 s of CPU per model here)
        aa = {"version": "standard"}
    else:  # AutoAttack's two gradient attacks with their standard settings (the footnote says so)
        aa = {"version": "custom", "attacks": ["apgd-ce", "apgd-t"], "attack_options": {"apgd": {"n_restarts": 1}}}

    t0 = time.perf_counter()
    x_test, y_test = load_dataset("digits", split="test").tensors
    for name, use_ib in (("digits_cnn_ce", False), ("digits_cnn_ibrar", True)):
        model = train(use_ib, epochs=epochs, limit=300 if args.smoke else None, seed=args.seed)
        entry = evaluate_for_leaderboard(
            model, x_test, y_test, dataset="digits", threat_model="Linf", eps=args.eps, model_name=name,
            n_examples=n_examples, batch_size=16, seed=args.seed, out_dir=out, state_dir=out / "aa_state" / name,
            overwrite=args.overwrite,
            metadata={
                "name": "IB-RAR (HSIC bottleneck)" if use_ib else "Cross-entropy baseline",
                "architecture": "DigitsCNN",
                "venue": "ib_plugins example",
            },
            **aa,
        )
        print(f"{name}: clean {entry.clean_acc}%, AutoAttack {entry.autoattack_acc}% -> {entry.path}")

    entries = load_entries(out / "model_info")
    md_path, html_path = render_leaderboard(entries, out, title="Digits, L-inf eps = %g" % args.eps)
    print()
    print(render_markdown(entries))
    print()
    print(f"wrote {md_path} and {html_path} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
