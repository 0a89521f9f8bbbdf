"""Experiment runners behind the command line: evaluate a checkpoint, select robust layers, the demo.

:func:`evaluate_checkpoint` also evaluates a model kept as code (:func:`load_model_from_factory`:
``"package.module:function"`` or ``"path/to/file.py:function"`` plus a state_dict). Long phases
report progress on stderr (:mod:`ib_plugins._progress`: tqdm on a terminal, plain lines otherwise),
each named: the demo's and the layer selection's networks by what they train (``IB-RAR (ce + IB on
conv3, fc1 + code mask)``), every attack by its name.

Each runner writes a results folder holding the resolved configuration (``config.json``), the
metrics (``metrics.json``), a markdown table (``results.md``) and PNG plots, and returns the metrics.
A folder that already holds a *different* run is refused unless ``overwrite=True``; nothing is
written before the inputs (checkpoints, datasets) have been read successfully.

Example:
    >>> import tempfile, json, os
    >>> d = tempfile.mkdtemp()
    >>> prepare_results_dir(d, {"kind": "example", "n": 1}, overwrite=False)
    >>> json.load(open(os.path.join(d, "config.json")))["kind"]
    'example'

The package, one runner per module: :mod:`~ib_plugins.experiments.evaluate`,
:mod:`~ib_plugins.experiments.select_layers` and :mod:`~ib_plugins.experiments.demo`; what they share:
:mod:`~ib_plugins.experiments.results_dir` (results folders, test inputs), :mod:`~ib_plugins.experiments.runs`
(training one network with progress) and :mod:`~ib_plugins.experiments.user_model` (a model kept as code).
"""

from __future__ import annotations

from ib_plugins.experiments.demo import DEMO_EPOCHS, run_demo
from ib_plugins.experiments.evaluate import evaluate_checkpoint
from ib_plugins.experiments.results_dir import prepare_results_dir, write_json
from ib_plugins.experiments.select_layers import _selection_warnings, select_robust_layers  # noqa: F401
from ib_plugins.experiments.user_model import (
    _check_model_source,  # noqa: F401
    _dataset_info,  # noqa: F401
    load_model_from_factory,
)

__all__ = [
    "prepare_results_dir",
    "write_json",
    "load_model_from_factory",
    "evaluate_checkpoint",
    "select_robust_layers",
    "run_demo",
    "DEMO_EPOCHS",
]
