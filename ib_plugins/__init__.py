"""ib-plugins: information-bottleneck defences against adversarial examples, as drop-in hooks.

Core API (imports torch and nothing heavier):

* :func:`wrap_model` / :class:`IBModel`: IB-RAR's HSIC bottleneck on chosen layers of any model,
  plus the optional :class:`ChannelMask`;
* :func:`nhsic`: the authors' normalised HSIC; the textbook :func:`ib_plugins.hsic.hsic` and the
  per-batch operators live in :mod:`ib_plugins.hsic` (not re-exported, so the module name stays
  importable as ``ib_plugins.hsic``);
* :func:`capture_activations`, :func:`list_layer_names`, :func:`resolve_layers`: layer discovery and
  temporary activation capture.

Toolkit glue lives in :mod:`ib_plugins.adapters` and is imported explicitly.

Example:
    >>> import torch, torch.nn as nn, ib_plugins
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> model = ib_plugins.wrap_model(net, ib_layers=["2"], num_classes=10)
    >>> x, y = torch.rand(8, 1, 8, 8), torch.arange(8)
    >>> loss = nn.functional.cross_entropy(model.train()(x), y) + model.ib_loss(x, y)
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

from ib_plugins.activation_capture import ActivationCapture, capture_activations
from ib_plugins.bottleneck import HSICBottleneck, IBTerms, ib_objective
from ib_plugins.channel_mask import ChannelMask, select_channels
from ib_plugins.errors import (
    IBPluginsError,
    LayerNotFiredError,
    MissingOptionalDependencyError,
    NonFiniteActivationError,
    NoTrainingForwardError,
    UnknownLayerError,
)
from ib_plugins.hsic import nhsic
from ib_plugins.layer_selection import list_layer_names, resolve_layers
from ib_plugins.presets import LayerPreset, get_preset, list_presets
from ib_plugins.wrap import IBModel, wrap_model

__version__ = "0.1.0"

__all__ = [
    "wrap_model",
    "IBModel",
    "HSICBottleneck",
    "IBTerms",
    "ib_objective",
    "ChannelMask",
    "select_channels",
    "capture_activations",
    "ActivationCapture",
    "list_layer_names",
    "resolve_layers",
    "LayerPreset",
    "get_preset",
    "list_presets",
    "nhsic",
    "IBPluginsError",
    "UnknownLayerError",
    "LayerNotFiredError",
    "NonFiniteActivationError",
    "NoTrainingForwardError",
    "MissingOptionalDependencyError",
    "__version__",
]
