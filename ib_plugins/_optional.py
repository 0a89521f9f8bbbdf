"""Lazy access to optional toolkits (private).

Module names, not distribution names, are checked: ``pyautoattack`` installs the module
``pyautoattack``, the GitHub AutoAttack installs ``autoattack``.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from ib_plugins.errors import MissingOptionalDependencyError

__all__ = ["is_available", "require"]

#: module name -> (distribution name, pip extra)
_KNOWN = {
    "art": ("adversarial-robustness-toolbox", "art"),
    "torchattacks": ("torchattacks", "torchattacks"),
    "pyautoattack": ("pyautoattack", "autoattack"),
    "autoattack": ("autoattack (github.com/fra31/auto-attack)", "autoattack"),
    "robustbench": ("robustbench", "robustbench"),
    "torchvision": ("torchvision", "data"),
    "sklearn": ("scikit-learn", "data"),
    "matplotlib": ("matplotlib", "plots"),
    "tqdm": ("tqdm", "base"),
    "timm": ("timm", "all"),
}


def is_available(module_name: str) -> bool:
    """Tell whether ``module_name`` can be imported, without importing it.

    Args:
        module_name: a top-level module name such as ``"art"``.

    Returns:
        True when :func:`importlib.util.find_spec` finds the module.

    Example:
        >>> is_available("torch")
        True
    """
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def require(module_name: str, *, purpose: str, extra: str | None = None) -> ModuleType:
    """Import an optional module or raise an error that names the pip extra.

    Args:
        module_name: module to import, e.g. ``"art"`` or ``"torchattacks"``.
        purpose: who needs it, e.g. ``"ib_plugins.adapters.art_training"``.
        extra: the ``ib-plugins`` extra that installs it; looked up when omitted.

    Returns:
        The imported module.

    Raises:
        MissingOptionalDependencyError: the module cannot be imported.

    Example:
        >>> require("torch", purpose="the docs").__name__
        'torch'
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        dist, default_extra = _KNOWN.get(module_name, (module_name, "all"))
        extra = extra or default_extra
        raise MissingOptionalDependencyError(
            f"{purpose} needs the module {module_name!r} ({dist}), which could not be imported "
            f"({err}). Install it with: pip install 'ib-plugins[{extra}]'"
        ) from err
