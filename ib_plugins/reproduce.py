"""Reproduce the papers' tables: a grid of ordinary train + evaluate runs, resumable, with honest statistics.

A **grid** (a JSON or YAML file, or a built-in name, see :func:`list_grids`) lists datasets ×
models × methods × {baseline, +IB-RAR} × optional variants (other toggles, e.g. mask on/off) ×
seeds, with a shared training and evaluation configuration. Each **cell** is an ordinary
:class:`~ib_plugins.training.Trainer` run (``ib-plugins train``) and an ordinary
:func:`~ib_plugins.experiments.evaluate_checkpoint` (``ib-plugins evaluate``) in its own folder
``OUT/cells/<dataset>/<model>/<method>[+ib][/<variant>]/seed<k>/{train,eval}``, so

* finished cells are reused and an interrupted grid resumes (training resumes from its last
  epoch's checkpoint; a cell whose evaluation matches is skipped; one whose recorded attack settings
  differ from what this version builds is left out of the report and evaluated again);
* :func:`print_commands` emits the same work as plain ``ib-plugins train`` / ``ib-plugins evaluate``
  commands for any scheduler (a SLURM array, a cluster's queue), followed by the report command;
* ``workers > 1`` runs cells in that many processes (one CUDA device each when several are visible).

The **report** (:func:`build_report`; ``report.md``, ``report.json``, ``report.html``) gives, per
row (dataset, model, method, ±IB-RAR, variant), mean ± standard deviation over seeds of the clean
accuracy and of each attack's accuracy (or its success rate over the originally correct images: the
grid's ``metric``, by default the paper table's, else ``success_rate`` for the entropic suite as its
paper reports it, else ``accuracy``), and for every (baseline, +IB-RAR) pair the paired difference
over seeds with its 95 % Student-t interval (it says when there are too few seeds for one). Where a
grid names a paper table, the paper's numbers are shown beside ours.

Entropic retraining starts from a pretrained network: for ``method="entropic"`` cells the grid runs
a CE pre-training cell first (row ``<dataset>/<model>/pretrain-ce``, the ``pretrain`` overrides),
evaluates it as the "original" model, and passes its checkpoint as ``init_checkpoint``.

Example:
    >>> grid = load_grid("digits-tiny")
    >>> [c.key for c in expand_grid(grid)][:2]
    ['digits/digits-cnn/ce/seed0', 'digits/digits-cnn/ce/seed1']
    >>> len(expand_grid(grid))
    8
"""

from __future__ import annotations

import copy
import html
import json
import logging
import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ib_plugins._markdown import md_cell, md_text
from ib_plugins._types import PathLike
from ib_plugins.stats import mean_interval

__all__ = [
    "GRIDS",
    "list_grids",
    "load_grid",
    "grid_metric",
    "Cell",
    "expand_grid",
    "run_grid",
    "print_commands",
    "build_report",
    "archive_grid",
]

logger = logging.getLogger(__name__)

_IB_METHODS = ("ce", "pgd-at", "trades", "mart")
#: TrainConfig fields that only matter with the IB term (dropped from baseline cells).
_IB_ONLY = ("ib_layers", "alpha", "beta", "y_kernel", "record_masked", "ib_on", "x_for_ib", "ib_global_batch")
_GRID_KEYS = {"name", "description", "datasets", "models", "methods", "ib", "variants", "seeds", "train",
              "ib_train", "pretrain", "evaluate", "paper", "metric"}
_METRICS = ("accuracy", "success_rate")
_EVAL_KEYS = {"suite", "budget", "n", "attacks", "pgd_steps", "cw_steps", "batch_size", "engine", "autoattack_n",
              "autoattack_version", "autoattack_seeds"}

# IB-RAR paper, Table I (VGG-16, CIFAR-10 columns; means of 3 runs; spec §7.1).
_TABLE1_C10 = {
    "pgd-at": {"clean": 75.02, "pgd": 42.45, "cw": 37.80, "fgsm": 47.32, "fab": 41.03, "nifgsm": 47.59},
    "pgd-at+ib": {"clean": 76.22, "pgd": 45.09, "cw": 41.83, "fgsm": 50.53, "fab": 46.22, "nifgsm": 51.93},
    "trades": {"clean": 73.44, "pgd": 43.92, "cw": 38.28, "fgsm": 47.94, "fab": 41.64, "nifgsm": 48.41},
    "trades+ib": {"clean": 80.63, "pgd": 44.13, "cw": 41.81, "fgsm": 51.45, "fab": 43.63, "nifgsm": 51.69},
    "mart": {"clean": 73.52, "pgd": 44.64, "cw": 37.58, "fgsm": 48.73, "fab": 40.56, "nifgsm": 48.95},
    "mart+ib": {"clean": 80.54, "pgd": 44.34, "cw": 41.45, "fgsm": 52.19, "fab": 44.72, "nifgsm": 51.93},
}
# Table II, ResNet-18 on CIFAR-10 (its CW column is not a real attack: the model returns log_softmax).
_TABLE2_R18 = {
    "pgd-at": {"clean": 75.05, "pgd": 45.21, "cw": 74.09, "fgsm": 48.60, "fab": 42.26, "nifgsm": 49.71},
    "pgd-at+ib": {"clean": 75.10, "pgd": 45.55, "cw": 74.10, "fgsm": 48.83, "fab": 42.74, "nifgsm": 50.03},
    "trades": {"clean": 73.04, "pgd": 45.91, "cw": 72.16, "fgsm": 48.51, "fab": 42.59, "nifgsm": 49.92},
    "trades+ib": {"clean": 73.07, "pgd": 46.13, "cw": 72.16, "fgsm": 48.85, "fab": 42.74, "nifgsm": 50.09},
    "mart": {"clean": 72.96, "pgd": 46.17, "cw": 72.00, "fgsm": 49.19, "fab": 41.62, "nifgsm": 50.34},
    "mart+ib": {"clean": 76.85, "pgd": 48.92, "cw": 75.78, "fgsm": 52.52, "fab": 45.01, "nifgsm": 54.72},
}
# Table II, WRN-28-10 on CIFAR-100.
_TABLE2_WRN = {
    "pgd-at": {"clean": 39.88, "pgd": 9.74, "cw": 13.66, "fgsm": 16.85, "fab": 10.28, "nifgsm": 14.53},
    "pgd-at+ib": {"clean": 37.68, "pgd": 16.60, "cw": 15.98, "fgsm": 19.44, "fab": 14.85, "nifgsm": 19.48},
    "trades": {"clean": 39.38, "pgd": 10.44, "cw": 14.69, "fgsm": 17.60, "fab": 10.42, "nifgsm": 15.38},
    "trades+ib": {"clean": 36.41, "pgd": 19.18, "cw": 16.67, "fgsm": 20.69, "fab": 16.61, "nifgsm": 21.95},
    "mart": {"clean": 39.91, "pgd": 12.30, "cw": 14.29, "fgsm": 17.85, "fab": 11.73, "nifgsm": 16.57},
    "mart+ib": {"clean": 40.65, "pgd": 23.44, "cw": 17.96, "fgsm": 24.46, "fab": 19.24, "nifgsm": 26.41},
}
# Entropic paper, Table III/IV (LeNet-5 on MNIST): attack success rates over originally correct images.
_ENTROPIC_LENET = {
    "pretrain-ce": {"clean": 99.05, "linf-pgd": 99.92, "bim": 99.95, "fgsm": 79.56, "cw": 4.16, "l2-pgd": 99.04},
    "entropic": {"clean": 97.73, "linf-pgd": 14.48, "bim": 3.48, "fgsm": 2.95, "cw": 0.58, "l2-pgd": 5.19},
}

_AT_PAPER = {"epochs": 60, "batch_size": 100}

#: The built-in grids: name -> grid dict (see the module docstring for the keys).
GRIDS: Mapping[str, Mapping[str, Any]] = {
    "digits-tiny": {
        "description": "CI-sized: digits CNN, CE and PGD-AT, each with and without IB-RAR, 2 seeds, 1 epoch",
        "datasets": ["digits"], "models": ["digits-cnn"], "methods": ["ce", "pgd-at"], "ib": [False, True],
        "seeds": [0, 1], "train": {"epochs": 1, "batch_size": 50, "train_limit": 300},
        "ib_train": {"ib_layers": "robust"},
        "evaluate": {"suite": "ibrar", "n": 60, "attacks": ["pgd", "fgsm"]},
    },
    "fmnist-cpu": {
        "description": "CPU-sized IB-RAR Table I: Fashion-MNIST (5,000 training images, 8 epochs), the VGG-style "
                       "vgg-mini, CE/PGD-AT/TRADES/MART, each with and without IB-RAR (all hook points for AT, robust "
                       "layers for CE, code-mode mask), 3 seeds; the IB-RAR suite on 1,000 test images at L-inf eps 0.1, "
                       "AutoAttack on 100 of them for seed 0",
        "datasets": ["fashion-mnist"], "models": ["vgg-mini"], "methods": ["ce", "pgd-at", "trades", "mart"],
        "ib": [False, True], "seeds": [0, 1, 2],
        "train": {"epochs": 8, "batch_size": 100, "train_limit": 5000, "test_limit": 1000},
        "ib_train": {"mask": "code"},
        "evaluate": {"suite": "ibrar", "n": 1000, "autoattack_n": 100, "autoattack_seeds": [0]},
    },
    "digits-cpu": {
        "description": "CPU-sized IB-RAR Table I on the bundled digits: CE/PGD-AT/TRADES/MART ± IB-RAR, 3 seeds",
        "datasets": ["digits"], "models": ["digits-cnn"], "methods": ["ce", "pgd-at", "trades", "mart"],
        "ib": [False, True], "seeds": [0, 1, 2], "train": {"epochs": 20, "batch_size": 50},
        "ib_train": {"mask": "code"},
        "evaluate": {"suite": "ibrar", "autoattack_n": 100},
    },
    "ibrar-table1-cifar10": {
        "description": "IB-RAR Table I (CIFAR-10 columns): VGG-16, PGD-AT/TRADES/MART ± IB-RAR, 3 seeds (GPU-sized; "
                       "data via --data-dir)",
        "datasets": ["cifar10"], "models": ["vgg16"], "methods": ["pgd-at", "trades", "mart"], "ib": [False, True],
        "seeds": [0, 1, 2], "train": dict(_AT_PAPER), "ib_train": {"mask": "code"},
        "evaluate": {"suite": "ibrar", "budget": "ibrar-code"},
        "paper": {"source": "IB-RAR Table I (VGG-16, CIFAR-10; mean of 3 runs)", "rows": _TABLE1_C10},
    },
    "ibrar-table2-resnet18": {
        "description": "IB-RAR Table II: ResNet-18 on CIFAR-10, PGD-AT/TRADES/MART ± IB-RAR, 3 seeds (GPU-sized). The "
                       "paper's CW column is not a real attack (log_softmax outputs); ours uses logits",
        "datasets": ["cifar10"], "models": ["resnet18"], "methods": ["pgd-at", "trades", "mart"], "ib": [False, True],
        "seeds": [0, 1, 2], "train": dict(_AT_PAPER), "ib_train": {"mask": "code"},
        "evaluate": {"suite": "ibrar", "budget": "ibrar-code"},
        "paper": {"source": "IB-RAR Table II (ResNet-18, CIFAR-10; mean of 3 runs)", "rows": _TABLE2_R18},
    },
    "ibrar-table2-wrn": {
        "description": "IB-RAR Table II: WRN-28-10 on CIFAR-100, PGD-AT/TRADES/MART ± IB-RAR, 3 seeds (GPU-sized)",
        "datasets": ["cifar100"], "models": ["wrn28-10"], "methods": ["pgd-at", "trades", "mart"], "ib": [False, True],
        "seeds": [0, 1, 2], "train": dict(_AT_PAPER), "ib_train": {"mask": "code"},
        "evaluate": {"suite": "ibrar", "budget": "ibrar-code"},
        "paper": {"source": "IB-RAR Table II (WRN-28-10, CIFAR-100; mean of 3 runs)", "rows": _TABLE2_WRN},
    },
    "ibrar-table3-layers": {
        "description": "IB-RAR Table III: VGG-16 on CIFAR-10 without adversarial training, IB on the robust layers "
                       "vs all layers vs CE (GPU-sized)",
        "datasets": ["cifar10"], "models": ["vgg16"], "methods": ["ce"], "ib": [False, True],
        "variants": {"robust": {"ib_layers": "robust"}, "all": {"ib_layers": "all"}}, "ib_train": {"mask": "code"},
        "seeds": [0, 1, 2], "train": {"epochs": 60, "batch_size": 100},
        "evaluate": {"suite": "ibrar", "budget": "ibrar-code", "attacks": ["pgd"]},
    },
    "entropic-mnist": {
        "description": "Entropic retraining, paper settings: LeNet-5 on MNIST, pretrained 24 epochs, retrained 200 "
                       "epochs at batch 4 (2-3 hours of one CPU core by the epoch times measured on MNIST; data via "
                       "--data-dir)",
        "datasets": ["mnist"], "models": ["lenet5"], "methods": ["entropic"], "ib": [False],
        "seeds": [0], "train": {"epochs": 200, "batch_size": 4, "lr": 9e-4, "entropic_sigma": 1.65},
        "pretrain": {"epochs": 24, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "schedule": "none"},
        "evaluate": {"suite": "entropic"},
        "paper": {"source": "entropic retraining, Tables III-IV (LeNet-5, MNIST); attack SUCCESS rates",
                  "metric": "success_rate", "rows": _ENTROPIC_LENET},
    },
    "entropic-mnist-cpu": {
        "description": "Entropic retraining, the paper's LeNet-5 setting on MNIST cut to a CPU: pretraining as the paper "
                       "(24 epochs, batch 64, Adam 1e-3), retraining at the paper's batch 4, lr 9e-4, lambda 1, "
                       "sigma 1.65 for 2 of its 200 epochs; the entropic suite on 1,000 test images (data via "
                       "--data-dir)",
        "datasets": ["mnist"], "models": ["lenet5"], "methods": ["entropic"], "ib": [False], "seeds": [0],
        "train": {"epochs": 2, "batch_size": 4, "lr": 9e-4, "entropic_sigma": 1.65, "test_limit": 1000},
        "pretrain": {"epochs": 24, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "schedule": "none"},
        "evaluate": {"suite": "entropic", "n": 1000},
        "paper": {"source": "entropic retraining, Tables III-IV (LeNet-5, MNIST; 200 retraining epochs); attack "
                  "SUCCESS rates", "metric": "success_rate", "rows": _ENTROPIC_LENET},
    },
    "entropic-fmnist-cpu": {
        "description": "Entropic retraining on Fashion-MNIST with LeNet-5 (CPU-sized: 10,000 training images, "
                       "pretraining 10 epochs, retraining 10 epochs at batch 64)",
        "datasets": ["fashion-mnist"], "models": ["lenet5"], "methods": ["entropic"], "ib": [False],
        "seeds": [0, 1, 2],
        "train": {"epochs": 10, "batch_size": 64, "train_limit": 10000, "test_limit": 1000, "lr": 9e-4,
                  "entropic_sigma": 1.65},
        "pretrain": {"epochs": 10, "batch_size": 64, "optimizer": "adam", "lr": 1e-3, "schedule": "none"},
        "evaluate": {"suite": "entropic", "n": 1000},
    },
}


def list_grids() -> list[str]:
    """Names of the built-in grids.

    Returns:
        The names (see :data:`GRIDS`).

    Example:
        >>> "fmnist-cpu" in list_grids()
        True
    """
    return list(GRIDS)


def _read_grid_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"grid: {path} is not a text file (byte {err.start} is not UTF-8)") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as err:
            raise ValueError(f"grid: {path} is YAML, which needs PyYAML (pip install pyyaml); or write it as JSON") from err
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"grid: {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
        except RecursionError:
            raise ValueError(f"grid: {path} is nested too deeply to be a grid") from None
        except ValueError as err:  # e.g. an integer literal beyond Python's digit limit
            raise ValueError(f"grid: {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"grid: {path} must hold an object (a mapping of grid keys), got {type(data).__name__}")
    return data


def load_grid(grid: str | PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A validated grid from a built-in name, a JSON/YAML file or a mapping.

    Args:
        grid: a name from :func:`list_grids`, a path, or the grid itself.

    Returns:
        The grid with defaults filled in (``ib`` = ``[False, True]``, ``variants`` = ``{"": {}}``...).

    Raises:
        ValueError: unknown name or keys, wrong types, an unknown method/model/dataset (the message
            lists the valid ones).

    Example:
        >>> load_grid({"datasets": ["digits"], "models": ["digits-cnn"], "methods": ["ce"], "seeds": [0]})["ib"]
        [False, True]
    """
    if isinstance(grid, Mapping):
        data, name = copy.deepcopy(dict(grid)), str(grid.get("name", "custom"))
    elif isinstance(grid, str) and grid in GRIDS:
        data, name = copy.deepcopy(dict(GRIDS[grid])), grid
    else:
        path = Path(grid)
        if not path.is_file():
            raise ValueError(f"grid: expected a built-in grid ({', '.join(GRIDS)}) or a JSON/YAML file, got {str(grid)!r}")
        data, name = _read_grid_file(path), path.stem
    unknown = sorted(set(data) - _GRID_KEYS)
    if unknown:
        raise ValueError(f"grid: unknown keys {unknown}; valid keys: {', '.join(sorted(_GRID_KEYS))}")
    data.setdefault("name", name)
    data.setdefault("description", "")
    data.setdefault("ib", [False, True])
    data.setdefault("variants", {"": {}})
    data.setdefault("seeds", [0])
    for key in ("train", "ib_train", "pretrain", "evaluate"):
        data.setdefault(key, {})
        if not isinstance(data[key], dict):
            raise ValueError(f"grid: {key!r} must be an object, got {type(data[key]).__name__}")
    for key in ("datasets", "models", "methods", "seeds", "ib"):
        value = data.get(key)
        if not isinstance(value, list) or not value:
            raise ValueError(f"grid: {key!r} must be a non-empty list, got {value!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in data["seeds"]):
        raise ValueError(f"grid: 'seeds' must be ints >= 0, got {data['seeds']!r}")
    if not all(isinstance(b, bool) for b in data["ib"]):
        raise ValueError(f"grid: 'ib' must list booleans (false = baseline, true = +IB-RAR), got {data['ib']!r}")
    if not isinstance(data["variants"], dict) or not data["variants"]:
        raise ValueError(f"grid: 'variants' must be a non-empty object name -> training overrides, got {data['variants']!r}")
    if "metric" in data and data["metric"] not in _METRICS:
        raise ValueError(f"grid: 'metric' must be one of {', '.join(_METRICS)}, got {data['metric']!r}")
    unknown_eval = sorted(set(data["evaluate"]) - _EVAL_KEYS)
    if unknown_eval:
        raise ValueError(f"grid: unknown 'evaluate' keys {unknown_eval}; valid: {', '.join(sorted(_EVAL_KEYS))}")
    cells = expand_grid(data)  # validates every cell's training configuration
    if not cells:
        raise ValueError("grid: it expands to no cell")
    return data


def grid_metric(grid: str | PathLike | Mapping[str, Any]) -> str:
    """What a grid's report tabulates per attack: ``"accuracy"`` or ``"success_rate"``.

    The grid's own ``metric`` when it sets one; else its paper table's; else ``"success_rate"`` (over
    the originally correct images) for the entropic suite, which its paper reports that way, and
    ``"accuracy"`` for every other suite.

    Args:
        grid: a name from :func:`list_grids`, a path, or the grid itself.

    Returns:
        ``"accuracy"`` or ``"success_rate"``.

    Example:
        >>> grid_metric("fmnist-cpu"), grid_metric("entropic-fmnist-cpu")
        ('accuracy', 'success_rate')
    """
    return _metric_of(load_grid(grid))


def _metric_of(data: Mapping[str, Any]) -> str:
    """:func:`grid_metric` of a grid already loaded by :func:`load_grid`."""
    if "metric" in data:
        return str(data["metric"])
    paper_metric = (data.get("paper") or {}).get("metric")
    if paper_metric is not None:
        return str(paper_metric)
    return "success_rate" if data["evaluate"].get("suite") == "entropic" else "accuracy"


@dataclass(frozen=True)
class Cell:
    """One (dataset, model, method, ±IB, variant, seed) run of a grid.

    Attributes:
        key: ``dataset/model/method[+ib][/variant]/seed<k>``, also its folder under ``OUT/cells``.
        row: the key without the seed (the report's row).
        config: the training configuration (a dict of :class:`~ib_plugins.training.TrainConfig` fields).
        evaluate: the evaluation options.
        pretrain: the key of the CE pre-training cell it starts from (entropic retraining), or None.

    Example:
        >>> Cell("d/m/ce/seed0", "d/m/ce", {}, {}).row
        'd/m/ce'
    """

    key: str
    row: str
    config: Mapping[str, Any]
    evaluate: Mapping[str, Any] = field(default_factory=dict)
    pretrain: str | None = None

    @property
    def ib(self) -> bool:
        """Whether the cell trains with the IB-RAR term."""
        return bool(self.config.get("ib"))


def expand_grid(grid: Mapping[str, Any]) -> list[Cell]:
    """The cells of a grid, pre-training cells first, in a stable order.

    Args:
        grid: a grid (see :func:`load_grid`; defaults are applied here too).

    Returns:
        The cells.

    Raises:
        ValueError: a cell's training configuration is invalid (named).

    Example:
        >>> cells = expand_grid(load_grid("digits-tiny"))
        >>> cells[-1].key, cells[-1].config["ib"]
        ('digits/digits-cnn/pgd-at+ib/seed1', True)
    """
    from ib_plugins.training import TrainConfig, resolve_config

    cells: list[Cell] = []
    pretrain_cells: dict[str, Cell] = {}
    variants = grid.get("variants") or {"": {}}
    for dataset in grid["datasets"]:
        for model in grid["models"]:
            for method in grid["methods"]:
                for ib in grid.get("ib", [False, True]):
                    if ib and method not in _IB_METHODS:
                        continue  # the IB-RAR term combines with ce, pgd-at, trades and mart only
                    seen_baselines: dict[str, str] = {}
                    for variant, overrides in variants.items():
                        if not ib:
                            # a variant of IB-only settings does not change the baseline: one baseline row
                            overrides = {k: v for k, v in dict(overrides).items() if k not in _IB_ONLY}
                            signature = json.dumps(overrides, sort_keys=True, default=str)
                            if signature in seen_baselines:
                                continue
                            seen_baselines[signature] = variant
                            if not overrides:
                                variant = ""
                        for seed in grid["seeds"]:
                            row = f"{dataset}/{model}/{method}{'+ib' if ib else ''}" + (f"/{variant}" if variant else "")
                            config = {**grid.get("train", {}), "dataset": dataset, "model": model, "method": method,
                                      "seed": seed, "ib": ib, **(grid.get("ib_train", {}) if ib else {}),
                                      **dict(overrides)}
                            if not ib:
                                for key in _IB_ONLY:
                                    config.pop(key, None)
                            pre_key = None
                            if method == "entropic":
                                pre_row = f"{dataset}/{model}/pretrain-ce"
                                pre_key = f"{pre_row}/seed{seed}"
                                if pre_key not in pretrain_cells:
                                    pre_config = {**{k: v for k, v in grid.get("train", {}).items()
                                                     if k not in ("entropic_sigma", "entropic_lambda")},
                                                  "dataset": dataset, "model": model, "method": "ce", "seed": seed,
                                                  "ib": False, **grid.get("pretrain", {})}
                                    pretrain_cells[pre_key] = Cell(pre_key, pre_row, pre_config,
                                                                   dict(grid.get("evaluate", {})))
                            try:
                                resolve_config(TrainConfig.from_dict({**config, "init_checkpoint": config.get(
                                    "init_checkpoint", "pretrained.pt" if method == "entropic" else None)}))
                            except (TypeError, ValueError) as err:
                                raise ValueError(f"grid: cell {row}/seed{seed}: {err}") from err
                            cells.append(Cell(f"{row}/seed{seed}", row, config, dict(grid.get("evaluate", {})),
                                              pre_key))
    return list(pretrain_cells.values()) + cells


def _cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.key


def _train_config(out: Path, cell: Cell, *, device: str, data_dir: str | None) -> dict[str, Any]:
    config = dict(cell.config)
    config["device"] = device
    if data_dir is not None:
        config["data_dir"] = data_dir
    if cell.pretrain is not None:
        config["init_checkpoint"] = str(out / "cells" / cell.pretrain / "train" / "checkpoint.pt")
    return config


def _eval_kwargs(cell: Cell) -> dict[str, Any]:
    """The options of the cell's ``evaluate_checkpoint`` (AutoAttack only for ``autoattack_seeds``, when given)."""
    options = dict(cell.evaluate)
    options.setdefault("suite", "ibrar")
    seeds = options.pop("autoattack_seeds", None)
    if seeds is not None and int(cell.config["seed"]) not in seeds:
        options.pop("autoattack_n", None)
    return options


def _is_pretrain(cell: Cell) -> bool:
    return cell.row.endswith("pretrain-ce")


def _cell_done(out: Path, cell: Cell, train_config: Mapping[str, Any]) -> bool:
    marker = _cell_dir(out, cell) / "cell.json"
    if not marker.is_file():
        return False
    if not (_cell_dir(out, cell) / "eval" / "metrics.json").is_file():
        return False
    try:
        done = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    stored = done.get("config")
    if not isinstance(stored, dict):
        return False
    if not (_grid_relative(stored, cell) == _grid_relative(_identity(train_config), cell)
            and done.get("evaluate") == _eval_kwargs(cell)):
        return False
    try:
        metrics = json.loads((_cell_dir(out, cell) / "eval" / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return _same_attacks(metrics, cell)


def _current_attacks(cell: Cell) -> dict[str, Any]:
    """Attack name -> ``{"eps", "kwargs"}`` that this version of the library builds for the cell's evaluation."""
    from ib_plugins import evaluation as ev
    from ib_plugins.data_registry import get_dataset_info

    options = _eval_kwargs(cell)
    dataset = str(cell.config["dataset"])
    specs = ev.build_suite(options.get("suite", "ibrar"), budget=options.get("budget"), dataset=dataset,
                           num_classes=get_dataset_info(dataset).num_classes, pgd_steps=options.get("pgd_steps"),
                           cw_steps=options.get("cw_steps"), attacks=options.get("attacks"))
    return json.loads(json.dumps({s.name: {"eps": s.eps, "kwargs": dict(s.kwargs)} for s in specs}, default=str))


def _same_attacks(metrics: Mapping[str, Any], cell: Cell) -> bool:
    """False when the cell's evaluation ran other attack settings than this version builds.

    As after an upgrade that changed an attack: the cell's numbers would not be this suite's.
    """
    try:
        stored = {a["name"]: {"eps": a.get("eps"), "kwargs": a.get("kwargs", {})} for a in metrics["suite"]["attacks"]}
    except (KeyError, TypeError):
        return False
    return stored == _current_attacks(cell)


def _same_evaluation(folder: Path, cell: Cell) -> bool:
    """False when the cell's ``cell.json`` (written by a grid run) records other evaluation options.

    Cells run from ``--print-commands`` have no ``cell.json``; their evaluation is taken as it is.
    """
    try:
        done = json.loads((folder / "cell.json").read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        return False
    return done.get("evaluate") == _eval_kwargs(cell)


def _identity(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("device", "data_dir")}


def _grid_relative(config: Mapping[str, Any], cell: Cell) -> dict[str, Any]:
    """``config`` with an ``init_checkpoint`` from the cell's own pretraining cell relative to the grid folder.

    So a grid folder that moved (an archive, a copy) still matches its cells.
    """
    config = dict(config)
    checkpoint = config.get("init_checkpoint")
    if cell.pretrain is not None and isinstance(checkpoint, str):
        suffix = ("cells", *cell.pretrain.split("/"), "train", "checkpoint.pt")
        if Path(checkpoint).parts[-len(suffix):] == suffix:
            config["init_checkpoint"] = "/".join(suffix)
    return config


def _run_cell(out: Path, cell: Cell, *, device: str, data_dir: str | None, progress: bool, threads: int | None) -> str:
    import torch

    from ib_plugins.experiments import evaluate_checkpoint, write_json
    from ib_plugins.training import TrainConfig, Trainer

    if threads is not None:
        torch.set_num_threads(threads)
    folder = _cell_dir(out, cell)
    train_config = _train_config(out, cell, device=device, data_dir=data_dir)
    if _cell_done(out, cell, train_config):
        return "reused"
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    Trainer(TrainConfig.from_dict(train_config), out_dir=folder / "train", resume="auto", progress=progress).fit()
    options = _eval_kwargs(cell)
    evaluate_checkpoint(folder / "train" / "checkpoint.pt", out_dir=folder / "eval", data_dir=data_dir, device=device,
                        overwrite=True, progress=progress, seed=int(cell.config["seed"]), **options)
    write_json(folder / "cell.json", {"cell": cell.key, "config": _identity(train_config), "evaluate": options,
                                      "seconds": round(time.perf_counter() - t0, 2),
                                      "environment": _environment(device)})
    return f"done in {time.perf_counter() - t0:.0f} s"


def _environment(device: str) -> dict[str, Any]:
    """Where a cell ran: float results are bit-identical only on the same CPU/GPU, threads and versions."""
    import platform

    import torch

    import ib_plugins

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    env = {"ib_plugins": ib_plugins.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu": cpu, "threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def _worker(args: tuple[str, Cell, str, str | None]) -> tuple[str, str]:
    out, cell, device, data_dir = args
    return cell.key, _run_cell(Path(out), cell, device=device, data_dir=data_dir, progress=False, threads=1)


def run_grid(
    grid: str | PathLike | Mapping[str, Any],
    *,
    out_dir: PathLike,
    workers: int = 1,
    seeds: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    only: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every cell of a grid, then write the report.

    Args:
        grid: a built-in name, a JSON/YAML file or a grid mapping.
        out_dir: the grid's folder (``cells/`` and the report files).
        workers: cells run in this many processes; with several CUDA devices each worker takes one.
        seeds: use only the first ``seeds`` seeds of the grid (None = all).
        device: ``"cpu"``, ``"cuda"``...; with ``workers > 1`` and several CUDA devices, cells are
            spread over ``cuda:0..k-1``.
        data_dir: dataset folder (CIFAR, MNIST...).
        only: run only these cell keys (e.g. one per scheduler task); the report covers what exists.
        progress: progress bars (single-process runs only).

    Returns:
        The report (see :func:`build_report`).

    Raises:
        ValueError: a bad grid, ``workers`` < 1, or an unknown cell in ``only``.

    Example:
        >>> import tempfile
        >>> grid = {**load_grid("digits-tiny"), "methods": ["ce"], "ib": [False], "seeds": [0],
        ...         "train": {"epochs": 1, "batch_size": 50, "train_limit": 100}, "evaluate": {"n": 20, "attacks": ["fgsm"]}}
        >>> report = run_grid(grid, out_dir=tempfile.mkdtemp(), progress=False)
        >>> [row["row"] for row in report["rows"]]
        ['digits/digits-cnn/ce']
    """
    data = load_grid(grid)
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds: expected an int >= 1, got {seeds!r}")
        data["seeds"] = data["seeds"][:seeds]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    out = Path(out_dir)
    cells = expand_grid(data)
    if only is not None:
        keys = {c.key for c in cells}
        missing = [k for k in only if k not in keys]
        if missing:
            raise ValueError(f"only: unknown cells {missing}; this grid has {sorted(keys)}")
        cells = [c for c in cells if c.key in set(only)]
    out.mkdir(parents=True, exist_ok=True)
    from ib_plugins.experiments import write_json

    write_json(out / "grid.json", data)
    stages = [[c for c in cells if _is_pretrain(c)], [c for c in cells if not _is_pretrain(c)]]
    t0 = time.perf_counter()
    from ib_plugins._progress import progress_bar

    bar = progress_bar(total=len(cells), desc=f"reproduce {data['name']}", unit="cell", enabled=progress)
    for stage in stages:
        if not stage:
            continue
        if workers == 1:
            for cell in stage:
                bar.set_postfix_str(cell.key)
                status = _run_cell(out, cell, device=device, data_dir=data_dir, progress=progress, threads=None)
                logger.info("reproduce: %s %s", cell.key, status)
                bar.update(1)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            import torch

            n_cuda = torch.cuda.device_count() if device.startswith("cuda") else 0
            jobs = [(str(out), cell, f"cuda:{i % n_cuda}" if n_cuda > 1 else device, data_dir)
                    for i, cell in enumerate(stage)]
            with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for key, status in pool.map(_worker, jobs):
                    logger.info("reproduce: %s %s", key, status)
                    bar.update(1)
    bar.close()
    report = build_report(out, data)
    report["wall_time_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "report.json", report)
    return report


def print_commands(
    grid: str | PathLike | Mapping[str, Any],
    *,
    out_dir: PathLike,
    seeds: int | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
) -> str:
    """The grid as plain ``ib-plugins`` commands, one block per cell, then the report command.

    Writes each cell's ``train_config.json`` (the ``--config`` of its ``train`` command) under
    ``out_dir/cells``; trains and evaluates nothing. Run the blocks in any order within a stage
    (pre-training cells first), e.g. one per SLURM array task, then the last line.

    Args:
        grid: a built-in name, a JSON/YAML file or a grid mapping.
        out_dir: the grid's folder.
        seeds: use only the first ``seeds`` seeds.
        device: the device of every command.
        data_dir: dataset folder.

    Returns:
        The shell script text.

    Example:
        >>> import tempfile
        >>> script = print_commands("digits-tiny", out_dir=tempfile.mkdtemp())
        >>> sum(line.startswith("ib-plugins train") for line in script.splitlines())
        8
    """
    data = load_grid(grid)
    if seeds is not None:
        data["seeds"] = data["seeds"][:seeds]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from ib_plugins.experiments import write_json

    write_json(out / "grid.json", data)
    q = shlex.quote
    lines = [f"# ib-plugins reproduce: grid {data['name']!r} as plain commands ({len(expand_grid(data))} cells).",
             "# Run each cell's block (pre-training cells first), in any order or in parallel, then the last line."]
    for cell in expand_grid(data):
        folder = _cell_dir(out, cell)
        folder.mkdir(parents=True, exist_ok=True)
        config = _train_config(out, cell, device=device, data_dir=data_dir)
        write_json(folder / "train_config.json", config)
        lines.append(f"# cell {cell.key}")
        lines.append(f"ib-plugins train --config {q(str(folder / 'train_config.json'))} --out {q(str(folder / 'train'))} "
                     "--no-progress")
        options = _eval_kwargs(cell)
        flags = [f"--suite {q(options['suite'])}", f"--device {q(device)}", f"--seed {int(cell.config['seed'])}",
                 "--overwrite", "--no-progress"]
        for key in ("budget", "n", "pgd_steps", "cw_steps", "batch_size", "engine", "autoattack_n"):
            if options.get(key) is not None:
                flags.append(f"--{key.replace('_', '-')} {q(str(options[key]))}")
        if options.get("attacks"):
            flags.append(f"--attacks {q(','.join(options['attacks']))}")
        if data_dir is not None:
            flags.append(f"--data-dir {q(data_dir)}")
        lines.append(f"ib-plugins evaluate {q(str(folder / 'train' / 'checkpoint.pt'))} --out {q(str(folder / 'eval'))} "
                     + " ".join(flags))
    grid_arg = q(str(out / "grid.json"))
    lines.append(f"ib-plugins reproduce {grid_arg} --out {q(str(out))} --report-only")
    return "\n".join(lines) + "\n"


def _metric_values(metrics: Mapping[str, Any], *, metric: str) -> dict[str, float]:
    """Column -> value (%) of one cell's evaluation metrics."""
    suite = metrics["suite"]
    values = {"clean": 100 * float(suite["clean_accuracy"])}
    for attack in suite["attacks"]:
        value = attack.get("success_rate") if metric == "success_rate" else attack.get("accuracy")
        if value is not None:
            values[attack["name"]] = 100 * float(value)
    aa = metrics.get("autoattack")
    if aa and metric != "success_rate":
        values["autoattack"] = 100 * float(aa["robust_accuracy"])
    return values


def _column_info(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Column -> what it measured (attack, budget, images), from one cell's evaluation metrics."""
    def images(n: Any) -> str:
        return "" if n is None else f" ({int(n)} images)"

    suite = metrics["suite"]
    info = {"clean": "accuracy without attack" + images(suite.get("n"))}
    for attack in suite["attacks"]:
        text = ", ".join(str(t) for t in (attack.get("attack"), attack.get("description")) if t)
        info[attack["name"]] = (text or attack["name"]) + images(attack.get("n", suite.get("n")))
    aa = metrics.get("autoattack")
    if aa:
        info["autoattack"] = (f"AutoAttack {aa.get('version', 'standard')} ({aa.get('backend', '?')}), "
                              f"{aa.get('norm', '?')} eps={aa.get('eps')}, the first test images" + images(aa.get("n")))
    return info


def _fmt(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    if summary["std"] is None:
        return f"{summary['mean']:.2f}"
    return f"{summary['mean']:.2f} ± {summary['std']:.2f}"


def _fmt_diff(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return "-"
    if summary["low"] is None:
        return f"{summary['mean']:+.2f} (1 seed: no interval)"
    return f"{summary['mean']:+.2f} [{summary['low']:+.2f}, {summary['high']:+.2f}]"


def build_report(out_dir: PathLike, grid: str | PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Collect the cells' results into ``report.md``, ``report.json`` and ``report.html``.

    Cells whose evaluation is missing, or whose evaluated training configuration is not the one the
    grid asks for (a stale folder), are listed as missing, never mixed in.

    Args:
        out_dir: the grid's folder.
        grid: the grid.

    Returns:
        ``{"grid", "metric", "columns", "rows": [...], "pairs": [...], "missing": [...]}``.

    Raises:
        ValueError: a bad grid.

    Example:
        >>> import tempfile
        >>> build_report(tempfile.mkdtemp(), "digits-tiny")["missing"][0]
        'digits/digits-cnn/ce/seed0'
    """
    from ib_plugins.experiments import write_json
    from ib_plugins.training import TrainConfig, resolve_config

    data = load_grid(grid)
    out = Path(out_dir)
    metric = _metric_of(data)
    per_row: dict[str, dict[int, dict[str, float]]] = {}
    missing: list[str] = []
    columns: list[str] = ["clean"]
    column_info: dict[str, str] = {}
    for cell in expand_grid(data):
        folder = _cell_dir(out, cell)
        try:
            metrics = json.loads((folder / "eval" / "metrics.json").read_text())
            eval_config = json.loads((folder / "eval" / "config.json").read_text())
        except (OSError, ValueError):
            missing.append(cell.key)
            continue
        expected = resolve_config(TrainConfig.from_dict(_train_config(out, cell, device="cpu", data_dir=None)))
        stored = eval_config.get("train_config") or {}
        if _grid_relative(TrainConfig.from_dict(stored).run_identity(), cell) != _grid_relative(
                expected.run_identity(), cell):
            logger.warning("reproduce: %s holds the evaluation of another configuration; left out", folder / "eval")
            missing.append(cell.key)
            continue
        if not _same_evaluation(folder, cell):
            logger.warning("reproduce: %s was evaluated with other options than the grid's; left out", folder / "eval")
            missing.append(cell.key)
            continue
        if not _same_attacks(metrics, cell):
            logger.warning("reproduce: %s ran other attack settings than this ib-plugins builds (an older version?); "
                           "left out: rerun the grid to evaluate the cell again", folder / "eval")
            missing.append(cell.key)
            continue
        values = _metric_values(metrics, metric=metric)
        columns += [c for c in values if c not in columns]
        for column, text in _column_info(metrics).items():
            column_info.setdefault(column, text)
        per_row.setdefault(cell.row, {})[int(cell.config["seed"])] = values
    rows = []
    for row, seeds in per_row.items():
        summaries = {c: mean_interval([v[c] for v in seeds.values() if c in v]) for c in columns
                     if any(c in v for v in seeds.values())}
        rows.append({"row": row, "seeds": sorted(seeds), "values": {str(s): v for s, v in seeds.items()},
                     "summary": summaries})
    pairs = []
    for row in rows:
        if "+ib" not in row["row"]:
            continue
        base_name = row["row"].replace("+ib", "", 1)
        base = next((r for r in rows if r["row"] == base_name), None)
        if base is None and base_name.count("/") > 2:  # a variant of IB-only settings: the shared baseline
            base_name = base_name.rsplit("/", 1)[0]
            base = next((r for r in rows if r["row"] == base_name), None)
        if base is None:
            continue
        common = sorted(set(row["seeds"]) & set(base["seeds"]))
        diffs = {}
        for c in columns:
            d = [row["values"][str(s)][c] - base["values"][str(s)][c] for s in common
                 if c in row["values"][str(s)] and c in base["values"][str(s)]]
            if d:
                diffs[c] = mean_interval(d)
        pairs.append({"baseline": base_name, "ib": row["row"], "seeds": common, "difference": diffs})
    report = {"grid": data["name"], "description": data.get("description", ""), "metric": metric, "columns": columns,
              "column_info": {c: column_info[c] for c in columns if c in column_info},
              "rows": rows, "pairs": pairs, "missing": missing, "paper": data.get("paper")}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", report)
    from ib_plugins.training import _atomic_write_text

    _atomic_write_text(out / "report.md", _report_markdown(report))
    _atomic_write_text(out / "report.html", _report_html(report))
    return report


def _check_archive_dest(out_dir: PathLike, dest: PathLike) -> tuple[Path, Path]:
    """The resolved grid folder and archive folder; raises when the archive would lie inside the grid folder."""
    src, target = Path(out_dir).resolve(), Path(dest).resolve()
    if target == src or src in target.parents:
        raise ValueError(f"dest: must be outside the grid folder {str(out_dir)!r}, got {str(dest)!r}")
    if target.exists() and not target.is_dir():
        raise ValueError(f"dest: expected a folder, got the file {str(dest)!r}")
    return src, target


#: What :func:`archive_grid` copies: the text results, never checkpoints or figures.
_ARCHIVE_SUFFIXES = (".json", ".md", ".html", ".csv", ".txt")


def archive_grid(out_dir: PathLike, dest: PathLike) -> list[Path]:
    """Copy a grid folder's results, without its checkpoints, into a folder you can commit and diff.

    Copies ``grid.json``, the report files and every cell's text results (``cell.json``, the
    training ``config.json``/``history.json``, the evaluation ``config.json``/``metrics.json``/
    ``results.md``, AutoAttack's chunk files: every ``.json``, ``.md``, ``.html``, ``.csv`` and
    ``.txt`` file) into ``dest``, keeping the layout; checkpoints (``.pt``) and figures are left
    behind, and so are cells still running (no evaluation yet), so an archive never holds half a cell. ``dest`` is itself a grid folder: ``--report-only`` rebuilds the report from it, and a
    grid run with ``--out dest`` reuses its finished cells (they need ``cell.json`` and the
    evaluation files only) and runs just the missing ones. Files already in ``dest`` are replaced
    one by one, each atomically; nothing else there is touched.

    Args:
        out_dir: the grid's folder (as given to ``run_grid``).
        dest: the archive folder; created if missing. Must not be ``out_dir`` or lie inside it.

    Returns:
        The files written, as paths inside ``dest``.

    Raises:
        ValueError: ``out_dir`` is not a grid folder (no ``grid.json``), or ``dest`` is ``out_dir``
            or lies inside it.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> grid = {**load_grid("digits-tiny"), "methods": ["ce"], "ib": [False], "seeds": [0],
        ...         "train": {"epochs": 1, "batch_size": 50, "train_limit": 100},
        ...         "evaluate": {"n": 20, "attacks": ["fgsm"]}}
        >>> out, dest = tempfile.mkdtemp(), Path(tempfile.mkdtemp()) / "archive"
        >>> _ = run_grid(grid, out_dir=out, progress=False)
        >>> files = archive_grid(out, dest)
        >>> any(f.suffix == ".pt" for f in files)
        False
        >>> (dest / "cells/digits/digits-cnn/ce/seed0/eval/metrics.json").is_file()
        True
        >>> build_report(dest, grid)["missing"]
        []
    """
    from ib_plugins.training.checkpoint import _atomic_write

    src, target = _check_archive_dest(out_dir, dest)
    if not (src / "grid.json").is_file():
        raise ValueError(f"out_dir: expected a grid folder (with grid.json, as run_grid writes), got {str(out_dir)!r}")
    finished = {m.parent.parent for m in (src / "cells").rglob("eval/metrics.json")}
    written = []
    for path in sorted(src.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in _ARCHIVE_SUFFIXES:
            continue
        rel = path.relative_to(src)
        if len(rel.parts) > 1 and (rel.parts[0] != "cells" or not finished.intersection(path.parents)):
            continue  # the grid's own files at the top, and the cells that finished their evaluation
        copy = target / rel
        copy.parent.mkdir(parents=True, exist_ok=True)
        data = path.read_bytes()
        _atomic_write(copy, lambda f, data=data: f.write(data))
        written.append(copy)
    logger.info("reproduce: archived %d files of %s into %s", len(written), src, target)
    return written


def _paper_value(report: Mapping[str, Any], row: str, column: str) -> str:
    paper = report.get("paper") or {}
    method = row.split("/")[2] if row.count("/") >= 2 else row
    value = (paper.get("rows") or {}).get(method, {}).get(column)
    return "-" if value is None else f"{value:.2f}"


def _report_markdown(report: Mapping[str, Any]) -> str:
    metric = "attack success rate (%) over originally correct images" if report["metric"] == "success_rate" else \
        "accuracy (%) over all evaluated images"
    cols = report["columns"]
    lines = [f"# Grid {md_text(report['grid'])}", ""]
    if report.get("description"):
        lines += [md_text(report["description"]), ""]
    n_seeds = max((len(r["seeds"]) for r in report["rows"]), default=0)
    lines += [f"Cells: mean ± standard deviation over seeds of the {metric} (clean: accuracy); "
              f"{n_seeds} seed(s) per row at most.", ""]
    lines.append("| row | seeds | " + " | ".join(md_cell(c) for c in cols) + " |")
    lines.append("|---|---|" + "---|" * len(cols))
    for r in report["rows"]:
        cells = [_fmt(r["summary"].get(c)) for c in cols]
        lines.append(f"| {md_cell(r['row'])} | {len(r['seeds'])} | " + " | ".join(cells) + " |")
        if report.get("paper"):
            lines.append(f"| paper: {md_cell(r['row'].split('/')[2] if r['row'].count('/') >= 2 else r['row'])} | - | "
                         + " | ".join(_paper_value(report, r["row"], c) for c in cols) + " |")
    if report["pairs"]:
        lines += ["", "## IB-RAR minus baseline, paired by seed",
                  "", "Mean difference in points with its 95 % Student-t interval over seeds; an interval that contains "
                  "0 is a difference inside the noise.", "",
                  "| baseline → +IB-RAR | seeds | " + " | ".join(md_cell(c) for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for p in report["pairs"]:
            lines.append(f"| {md_cell(p['baseline'])} → +IB | {len(p['seeds'])} | "
                         + " | ".join(_fmt_diff(p["difference"].get(c)) for c in cols) + " |")
        if any(len(p["seeds"]) < 3 for p in report["pairs"]):
            lines += ["", "Fewer than 3 seeds: the intervals are very wide (t quantile 12.7 for 2 seeds) or absent; "
                      "treat the differences as indications, not findings."]
    if report.get("column_info"):
        lines += ["", "Columns:", ""]
        lines += [f"- {md_text(c)}: {md_text(t)}" for c, t in report["column_info"].items()]
    if report.get("paper"):
        lines += ["", f"Paper rows: {md_text(report['paper'].get('source', ''))}."]
    if report["missing"]:
        lines += ["", f"Missing cells ({len(report['missing'])}): " + ", ".join(md_cell(m) for m in report["missing"])]
    return "\n".join(lines) + "\n"


def _report_html(report: Mapping[str, Any]) -> str:
    e = html.escape
    cols = report["columns"]
    head = "".join(f"<th>{e(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{e(r['row'])}</td><td>{len(r['seeds'])}</td>"
        + "".join(f"<td>{e(_fmt(r['summary'].get(c)))}</td>" for c in cols) + "</tr>" for r in report["rows"]
    )
    pairs = "".join(
        f"<tr><td>{e(p['baseline'])} → +IB</td><td>{len(p['seeds'])}</td>"
        + "".join(f"<td>{e(_fmt_diff(p['difference'].get(c)))}</td>" for c in cols) + "</tr>" for p in report["pairs"]
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Grid {e(str(report['grid']))}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style></head><body>"
        f"<h1>Grid {e(str(report['grid']))}</h1><p>{e(str(report.get('description', '')))}</p>"
        f"<table><tr><th>row</th><th>seeds</th>{head}</tr>{body}</table>"
        f"<h2>IB-RAR minus baseline (95 % t-interval over seeds)</h2>"
        f"<table><tr><th>pair</th><th>seeds</th>{head}</tr>{pairs}</table>"
        + "".join(f"<p>{e(c)}: {e(t)}</p>" for c, t in (report.get("column_info") or {}).items())
        + "</body></html>\n"
    )
