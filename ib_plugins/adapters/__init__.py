"""Toolkit adapters: glue between :mod:`ib_plugins` and third-party adversarial-robustness toolkits.

Each adapter is a submodule that users import explicitly, so that ``import ib_plugins`` and
``import ib_plugins.adapters`` never import a toolkit:

* :mod:`ib_plugins.adapters.art_training`: IB-RAR inside the Adversarial Robustness Toolbox (ART)
  ``PyTorchClassifier`` and its adversarial trainers (plus a MART trainer in ART's conventions);
  needs ``pip install 'ib-plugins[art]'``. It re-exports :mod:`~ib_plugins.adapters.art_loss` (the loss),
  :mod:`~ib_plugins.adapters.art_classifier` (the classifier) and :mod:`~ib_plugins.adapters.art_trainers`.
* :mod:`ib_plugins.adapters.autoattack_eval`: AutoAttack evaluation of any classifier (with
  :mod:`~ib_plugins.adapters.autoattack_compat`, the upstream API, and
  :mod:`~ib_plugins.adapters.autoattack_state`, results and resumable chunk files).
* :mod:`ib_plugins.adapters.robustbench_eval`: RobustBench-compatible evaluation and leaderboard files.

Example:
    >>> import ib_plugins.adapters
    >>> ib_plugins.adapters.__name__
    'ib_plugins.adapters'
"""
