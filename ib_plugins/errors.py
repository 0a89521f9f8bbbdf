"""Exception types raised by :mod:`ib_plugins`.

Every error the library raises on bad input derives from :class:`IBPluginsError`, and also from the
built-in type a user would expect (``ValueError``, ``ImportError``, ``RuntimeError``), so both
``except IBPluginsError`` and ``except ValueError`` work.

Example:
    >>> from ib_plugins.errors import IBPluginsError, UnknownLayerError
    >>> issubclass(UnknownLayerError, ValueError) and issubclass(UnknownLayerError, IBPluginsError)
    True
"""

from __future__ import annotations

__all__ = [
    "IBPluginsError",
    "UnknownLayerError",
    "LayerNotFiredError",
    "NonFiniteActivationError",
    "MissingOptionalDependencyError",
    "NoTrainingForwardError",
]


class IBPluginsError(Exception):
    """Base class of every error raised by ib_plugins.

    Example:
        >>> try:
        ...     raise IBPluginsError("something went wrong")
        ... except IBPluginsError as err:
        ...     print(err)
        something went wrong
    """


class UnknownLayerError(IBPluginsError, ValueError):
    """A layer name is not a dotted ``named_modules()`` path of the model.

    The message names the model, lists close matches and points to
    :func:`ib_plugins.list_layer_names`.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import resolve_layers
        >>> try:
        ...     resolve_layers(nn.Sequential(nn.Linear(2, 2)), ["1"])
        ... except UnknownLayerError as err:
        ...     print(type(err).__name__)
        UnknownLayerError
    """


class LayerNotFiredError(IBPluginsError, RuntimeError):
    """A hooked layer did not run during the forward pass whose activations were requested.

    Example:
        >>> issubclass(LayerNotFiredError, RuntimeError)
        True
    """


class NonFiniteActivationError(IBPluginsError, FloatingPointError):
    """A captured activation, or the IB terms computed from it, holds NaN or infinite values.

    Example:
        >>> issubclass(NonFiniteActivationError, ArithmeticError)
        True
    """


class NoTrainingForwardError(IBPluginsError, RuntimeError):
    """An IB loss was requested but no matching training-mode forward was recorded.

    Example:
        >>> issubclass(NoTrainingForwardError, RuntimeError)
        True
    """


class MissingOptionalDependencyError(IBPluginsError, ImportError):
    """An optional toolkit needed by an adapter is not installed.

    The message names the ``pip`` extra that installs it.

    Example:
        >>> issubclass(MissingOptionalDependencyError, ImportError)
        True
    """
