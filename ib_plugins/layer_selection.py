"""Name layers by dotted ``named_modules()`` paths; discover and validate them.

Example:
    >>> import torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    >>> list_layer_names(net)
    ['0', '1', '2', '3']
    >>> list(resolve_layers(net, ["0", "3"]))
    ['0', '3']
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch.nn as nn

from ib_plugins.errors import UnknownLayerError
from ib_plugins.presets import check_preset_fits, get_preset, list_presets, preset_for_model

__all__ = ["list_layer_names", "resolve_layers", "expand_layer_spec", "LayerSpec"]

#: What ``ib_layers`` accepts: dotted names, a preset name (``"vgg16"``, ``"vgg16:robust"``),
#: ``"all"``/``"robust"`` (the model's own preset), or an int n (the last n hook points).
LayerSpec = str | int | Sequence[str]


def list_layer_names(model: nn.Module, *, of_type: type | tuple[type, ...] | None = None) -> list[str]:
    """All dotted submodule names of ``model`` (the root itself excluded), in registration order.

    Args:
        model: any module.
        of_type: keep only submodules that are instances of this type (or types).

    Returns:
        The names, as ``model.named_modules()`` yields them. A module registered under two names
        appears once, under its first name.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> list_layer_names(net, of_type=nn.Linear)
        ['0', '2']
    """
    names = []
    for name, module in model.named_modules():
        if not name:
            continue
        if of_type is not None and not isinstance(module, of_type):
            continue
        names.append(name)
    return names


def _unknown_layer_error(model: nn.Module, name: object) -> UnknownLayerError:
    names = list_layer_names(model)
    model_name = type(model).__name__
    if not isinstance(name, str):
        return UnknownLayerError(
            f"layer names must be dotted submodule paths (str), got {name!r} of type "
            f"{type(name).__name__}. Use ib_plugins.list_layer_names(model) to see the "
            f"{len(names)} names of {model_name}."
        )
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Close matches: {', '.join(map(repr, close))}." if close else ""
    return UnknownLayerError(
        f"{name!r} is not a submodule of {model_name}.{hint} "
        f"Use ib_plugins.list_layer_names(model) to see all {len(names)} names."
    )


def resolve_layers(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Module]:
    """Map dotted layer names to the submodules of ``model``.

    Args:
        model: the model.
        names: dotted ``named_modules()`` paths, e.g. ``["layer3.1.conv2", "fc"]``.

    Returns:
        An ordered ``{name: module}`` dict, in the order given.

    Raises:
        UnknownLayerError: a name is not a submodule of ``model`` (the message lists close matches and
            points to :func:`list_layer_names`), names the root module, or is repeated.

    Example:
        >>> import torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> try:
        ...     resolve_layers(net, ["2"])
        ... except UnknownLayerError as err:
        ...     print(str(err).split(".")[0])
        '2' is not a submodule of Sequential
    """
    if isinstance(names, str):
        names = [names]
    resolved: dict[str, nn.Module] = {}
    for name in names:
        if not isinstance(name, str) or not name:
            raise _unknown_layer_error(model, name)
        if name in resolved:
            raise UnknownLayerError(f"layer {name!r} is listed twice")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise _unknown_layer_error(model, name) from None
        if module is model:
            raise UnknownLayerError(f"{name!r} names the model itself, not one of its layers")
        resolved[name] = module
    return resolved


def expand_layer_spec(model: nn.Module, spec: LayerSpec) -> list[str]:
    """Turn an ``ib_layers`` specification into a list of dotted names (not yet validated).

    Accepted forms:

    * a list of dotted names: returned as given;
    * a single dotted name;
    * ``"all"`` or ``"robust"``: the hook points (or robust layers) of the model's own preset;
    * a preset name, optionally with ``":robust"``: e.g. ``"vgg16"`` or ``"vgg16:robust"`` (when the
      model has a preset of its own that the named one does not fit, e.g. ``"resnet18"`` on
      torchvision's ResNet-18, the error names the preset that fits);
    * an int ``n > 0``: the last ``n`` hook points of the model's own preset.

    Args:
        model: the model the names refer to.
        spec: the specification.

    Returns:
        The layer names.

    Raises:
        ValueError: the spec needs a preset and the model has none, the preset or subset is unknown,
            a named preset's layers are missing from a model that has another preset (see
            :func:`ib_plugins.presets.check_preset_fits`), or an int is out of range.
        TypeError: ``spec`` has an unsupported type.

    Example:
        >>> import torch.nn as nn
        >>> expand_layer_spec(nn.Linear(2, 2), ["weight_layer"])
        ['weight_layer']
        >>> expand_layer_spec(nn.Linear(2, 2), "vgg16:robust")
        ['block5', 'fc1', 'fc2']
    """
    if isinstance(spec, bool):
        raise TypeError(f"ib_layers: expected layer names, a preset name or an int, got {spec!r}")
    if isinstance(spec, int):
        preset = _own_preset(model, f"ib_layers={spec}")
        if not 0 < spec <= len(preset.layers):
            raise ValueError(
                f"ib_layers: expected an int in [1, {len(preset.layers)}] (the hook points of preset "
                f"{preset.name!r}), got {spec}"
            )
        return list(preset.layers[-spec:])
    if isinstance(spec, str):
        if spec in ("all", "robust"):
            return list(_own_preset(model, f"ib_layers={spec!r}").select(spec))
        base, _, subset = spec.partition(":")
        if base in list_presets():
            preset = get_preset(base)
            if preset_for_model(model) is not None:  # a known model: naming another model's preset is an error
                check_preset_fits(preset, model)
            return list(preset.select(subset or "all"))
        return [spec]
    if isinstance(spec, Sequence):
        names = list(spec)
        if not names:
            raise ValueError("ib_layers: expected at least one layer, got an empty list")
        return names
    raise TypeError(
        f"ib_layers: expected layer names, a preset name or an int, got {type(spec).__name__}"
    )


def _own_preset(model: nn.Module, what: str):  # noqa: ANN202 - LayerPreset
    preset = preset_for_model(model)
    if preset is None:
        raise ValueError(
            f"{what} needs a layer preset, and {type(model).__name__} has none: pass dotted layer names "
            f"(see ib_plugins.list_layer_names(model)) or a preset name "
            f"({', '.join(list_presets())}), or set the class attribute `ib_preset`"
        )
    return preset
