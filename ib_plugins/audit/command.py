"""The ``ib-plugins audit`` command line: its arguments and :func:`audit_command`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ib_plugins.audit.runner import run_audit

# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from err


def _json_object(text: str) -> dict[str, Any]:
    """Argparse type: a JSON object with string keys, e.g. ``'{"num_classes": 10}'``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        shown = repr(text) if len(text) <= 60 else repr(text[:60]) + "..."
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}', got {shown}")
    return value


def add_model_factory_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--model-factory``, ``--weights``, ``--factory-kwargs`` and ``--dataset`` (a user's model as code).

    ``ib-plugins evaluate`` and ``ib-plugins audit`` take them instead of a checkpoint; see
    :func:`ib_plugins.experiments.load_model_from_factory`.

    Args:
        parser: the (sub)parser.

    Returns:
        The same parser.

    Example:
        >>> p = add_model_factory_arguments(argparse.ArgumentParser())
        >>> a = p.parse_args(["--model-factory", "nets.py:cnn", "--factory-kwargs", '{"num_classes": 10}'])
        >>> a.model_factory, a.factory_kwargs, a.weights
        ('nets.py:cnn', {'num_classes': 10}, None)
    """
    add = parser.add_argument
    add("--model-factory", default=None, metavar="MODULE:FUNCTION",
        help="instead of a checkpoint, your own model: 'package.module:function' (importable from the current folder "
             "or PYTHONPATH) or 'path/to/file.py:function', called to build it; needs --dataset")
    add("--weights", default=None, metavar="FILE",
        help="state_dict for --model-factory (torch.save(model.state_dict(), FILE); read with weights_only=True; a "
             "checkpoint dict with a 'model' entry and an IBModel's 'model.' prefix are understood)")
    add("--factory-kwargs", type=_json_object, default=None, metavar="JSON",
        help="keyword arguments of the factory as a JSON object, e.g. '{\"num_classes\": 10}'")
    add("--dataset", default=None, help="test set of the --model-factory model, e.g. cifar10 (inputs in [0, 1])")
    return parser


def add_audit_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``ib-plugins audit`` arguments to a (sub)parser; :func:`audit_command` runs them.

    Args:
        parser: e.g. ``sub.add_parser("audit", help=...)``.

    Returns:
        The same parser.

    Example:
        >>> p = add_audit_arguments(argparse.ArgumentParser())
        >>> a = p.parse_args(["ckpt.pt", "--quick", "--eps-grid", "0,0.1,0.5"])
        >>> a.checkpoint, a.quick, a.eps_grid, a.out
        ('ckpt.pt', True, [0.0, 0.1, 0.5], None)
    """
    add = parser.add_argument
    add("checkpoint", nargs="?", default=None,
        help="checkpoint.pt written by 'ib-plugins train' (or the demo); or use --model-factory")
    add("--quick", action="store_true", help="CI setting: 100 images, short grids, few steps (~1 min on 2 CPU cores)")
    add("--out", default=None,
        help="report folder (default: <checkpoint or --weights folder>/audit or audit-quick)")
    add("--eps", type=float, default=None, help="main L-inf radius (default: the dataset's IB-RAR budget)")
    add("--eps-grid", type=_floats, default=None,
        help="radii of the accuracy-vs-eps curve, strictly increasing, e.g. 0,0.05,0.1,0.2,0.5")
    add("--n", type=int, default=None, help="test images (default: 100 quick, 450 full)")
    add("--surrogate", default=None,
        help="checkpoint of an undefended surrogate for the transfer check, or 'none' (default: train one)")
    add("--surrogate-epochs", type=int, default=None,
        help="epochs of the trained surrogate (default: 5 quick, 10 full)")
    add("--eot-samples", type=int, default=8, help="forwards averaged when the eval forward is stochastic")
    add("--tol", type=float, default=0.03, help="tolerance of the comparisons (absolute accuracy, default 0.03)")
    add("--zero-tol", type=float, default=0.05, help="accuracy counted as ~0 at the largest eps (default 0.05)")
    add("--success-tol", type=float, default=0.02,
        help="tolerated shortfall of the unbounded attack from 100%% success (default 0.02)")
    add("--strict", action="store_true", help="exit with status 1 when any check warns")
    add("--seed", type=int, default=0)
    add("--batch-size", type=int, default=100)
    add("--data-dir", default=None)
    add("--device", default="cpu")
    add("--overwrite", action="store_true", help="replace a report folder of a different audit")
    add("--no-progress", action="store_true", help="hide the progress bar")
    add("--engine", choices=("builtin", "torchattacks"), default="builtin",
        help="engine of the torchattacks-described attacks (CW, Square): builtin (default) or torchattacks")
    add("--ema", action="store_true", help="audit the checkpoint's averaged weights (a run trained with --ema-decay)")
    add_model_factory_arguments(parser)
    return parser


def audit_command(args: argparse.Namespace) -> int:
    """Run ``ib-plugins audit`` from parsed :func:`add_audit_arguments` arguments and print the verdicts.

    Args:
        args: the parsed arguments.

    Returns:
        0, or 1 with ``--strict`` when a check warns. Bad input raises (ValueError,
        CheckpointError...), which the CLI turns into exit status 2.

    Example:
        >>> args = add_audit_arguments(argparse.ArgumentParser()).parse_args(["/nonexistent.pt"])
        >>> try:
        ...     audit_command(args)
        ... except ValueError as err:
        ...     print(type(err).__name__)
        CheckpointError
    """
    from ib_plugins.experiments import _check_model_source

    factory = getattr(args, "model_factory", None)
    _check_model_source(args.checkpoint, model_factory=factory, weights=getattr(args, "weights", None),
                        factory_kwargs=getattr(args, "factory_kwargs", None), dataset=getattr(args, "dataset", None))
    target: Any = args.checkpoint
    name = None
    folder = Path(args.checkpoint).parent if args.checkpoint is not None else Path()
    if factory is not None:
        from ib_plugins.experiments import _dataset_info, load_model_from_factory
        from ib_plugins.training import _device

        _dataset_info(args.dataset)  # an unknown dataset is named before any user code runs
        _device(args.device)
        target = load_model_from_factory(factory, weights=args.weights, factory_kwargs=args.factory_kwargs,
                                         map_location=args.device)
        name = factory
        folder = Path(args.weights).parent if args.weights is not None else Path()
    out = args.out or str(folder / ("audit-quick" if args.quick else "audit"))
    surrogate: Any = args.surrogate
    if isinstance(surrogate, str) and surrogate.lower() == "none":
        surrogate = False
    report = run_audit(
        target, out_dir=out, quick=args.quick, dataset=getattr(args, "dataset", None), name=name,
        eps_grid=args.eps_grid, surrogate=surrogate, eps=args.eps, n=args.n, surrogate_epochs=args.surrogate_epochs,
        eot_samples=args.eot_samples, tol=args.tol, zero_tol=args.zero_tol, success_tol=args.success_tol,
        seed=args.seed, batch_size=args.batch_size, data_dir=args.data_dir, device=args.device,
        overwrite=args.overwrite, progress=not args.no_progress, engine=args.engine, ema=args.ema,
    )
    print(report.summary())
    for check in report.checks:
        print(f"  {check.status.upper():<5} {check.title}: {check.message}")
    print(f"Report: {Path(out) / 'audit.md'}, {Path(out) / 'audit.html'}, {Path(out) / 'audit.json'}")
    return 1 if args.strict and report.warned else 0
