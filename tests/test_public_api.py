"""The public surface: every exported name exists and is documented with an Example (house rule 11)."""

from __future__ import annotations

import importlib
import inspect
import types
import typing

import pytest

import ib_plugins

CORE_MODULES = (
    "ib_plugins.hsic",
    "ib_plugins.layer_selection",
    "ib_plugins.presets",
    "ib_plugins.activation_capture",
    "ib_plugins.bottleneck",
    "ib_plugins.channel_mask",
    "ib_plugins.wrap",
    "ib_plugins.errors",
    "ib_plugins.stats",
)


def _is_type_alias(obj: object) -> bool:
    """``Literal[...]``/``X | Y`` aliases (e.g. ``Kernel``, ``LayerSpec``) cannot carry a docstring."""
    return isinstance(obj, types.UnionType) or typing.get_origin(obj) is not None


def _documented_objects(module) -> list[tuple[str, object]]:
    return [(name, getattr(module, name)) for name in module.__all__ if not name.startswith("__")]


def test_top_level_all_names_exist_and_are_unique():
    assert len(ib_plugins.__all__) == len(set(ib_plugins.__all__))
    missing = [name for name in ib_plugins.__all__ if not hasattr(ib_plugins, name)]
    assert missing == []
    assert isinstance(ib_plugins.__version__, str)


@pytest.mark.parametrize("name", [n for n in ib_plugins.__all__ if not n.startswith("__")])
def test_top_level_name_has_docstring_with_example(name):
    obj = getattr(ib_plugins, name)
    assert inspect.isclass(obj) or callable(obj), f"{name} is neither a class nor a callable"
    doc = inspect.getdoc(obj) or ""
    assert "Example" in doc, f"ib_plugins.{name} has no 'Example' in its docstring"


@pytest.mark.parametrize("module_name", CORE_MODULES)
def test_core_module_all_names_exist_and_are_unique(module_name):
    module = importlib.import_module(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    assert len(module.__all__) == len(set(module.__all__))
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    assert "Example" in (module.__doc__ or ""), f"{module_name} has no module docstring with an Example"


def _core_callables():
    params = []
    for module_name in CORE_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in _documented_objects(module):
            if _is_type_alias(obj):
                continue
            params.append(pytest.param(module_name, name, id=f"{module_name.split('.')[-1]}.{name}"))
    return params


@pytest.mark.parametrize(("module_name", "name"), _core_callables())
def test_core_module_name_has_docstring_with_example(module_name, name):
    obj = getattr(importlib.import_module(module_name), name)
    assert inspect.isclass(obj) or callable(obj), f"{module_name}.{name} is neither a class nor a callable"
    doc = inspect.getdoc(obj) or ""
    assert "Example" in doc, f"{module_name}.{name} has no 'Example' in its docstring"


def test_top_level_reexports_are_the_core_objects():
    mod = importlib.import_module
    assert ib_plugins.wrap_model is mod("ib_plugins.wrap").wrap_model
    assert ib_plugins.nhsic is mod("ib_plugins.hsic").nhsic
    assert ib_plugins.ChannelMask is mod("ib_plugins.channel_mask").ChannelMask
    assert ib_plugins.capture_activations is mod("ib_plugins.activation_capture").capture_activations


def test_submodules_are_not_shadowed_by_reexported_functions():
    # `from ib_plugins.hsic import hsic` in __init__ rebinds the attribute `ib_plugins.hsic` from the
    # submodule to the function, so `import ib_plugins.hsic as m` / `from ib_plugins import hsic`
    # give the function and `ib_plugins.hsic.nhsic` fails.
    for module_name in CORE_MODULES:
        short = module_name.rsplit(".", 1)[1]
        assert inspect.ismodule(getattr(ib_plugins, short)), (
            f"ib_plugins.{short} is {getattr(ib_plugins, short)!r}, not the submodule {module_name}"
        )


def test_errors_derive_from_base_and_builtin():
    from ib_plugins import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.IBPluginsError)
    assert issubclass(errors.UnknownLayerError, ValueError)
    assert issubclass(errors.MissingOptionalDependencyError, ImportError)
    assert issubclass(errors.LayerNotFiredError, RuntimeError)
    assert issubclass(errors.NoTrainingForwardError, RuntimeError)
