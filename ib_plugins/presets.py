"""Layer presets: which layers to hook, which are "robust", and where the channel mask goes.

A preset names layers by dotted ``named_modules()`` paths. Presets exist for the layouts of the
IB-RAR paper's models (VGG-16, ResNet-18, WRN-28-10, as built by :mod:`ib_plugins.models`), for
torchvision's ``resnet18`` and for the small models of the model zoo.

A model can declare its preset with a class attribute ``ib_preset = "<name>"``; torchvision's
ResNet-18 is recognised by its structure.

Example:
    >>> from ib_plugins.presets import get_preset
    >>> p = get_preset("vgg16")
    >>> p.robust_layers
    ('block5', 'fc1', 'fc2')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

__all__ = ["LayerPreset", "get_preset", "list_presets", "preset_for_model", "register_preset"]


@dataclass(frozen=True)
class LayerPreset:
    """Hook points of one architecture.

    Attributes:
        name: registry name, e.g. ``"vgg16"``.
        layers: every hook point, in forward order (the authors' ``output_list``).
        robust_layers: the subset the paper found robust (empty when the paper gives none).
        mask_layer: the layer whose output the channel mask acts on, or None.
        mask_k: the authors' ``k`` for the code-mode mask on this architecture.
        record_masked: whether the IB term sees the mask layer's output *after* the mask (True: the
            authors' VGG-16 masks block 5 before appending it to its list) or *before* it (False:
            their ResNet-18 appends the pooled vector, then masks it; spec §2.2). Only matters when
            the mask layer is also an IB layer; :func:`ib_plugins.wrap_model` uses it by default.
        description: one line for listings.
        matches: optional predicate recognising a model instance without an ``ib_preset`` attribute.

    Example:
        >>> LayerPreset(name="tiny", layers=("0", "2")).layers
        ('0', '2')
    """

    name: str
    layers: tuple[str, ...]
    robust_layers: tuple[str, ...] = ()
    mask_layer: str | None = None
    mask_k: int = 10
    record_masked: bool = True
    description: str = ""
    matches: Callable[[nn.Module], bool] | None = field(default=None, compare=False, repr=False)

    def select(self, which: str = "all") -> tuple[str, ...]:
        """Return the layers of a named subset.

        Args:
            which: ``"all"`` for every hook point or ``"robust"`` for the robust layers.

        Returns:
            The dotted layer names.

        Raises:
            ValueError: ``which`` is unknown, or the preset has no robust layers.

        Example:
            >>> get_preset("vgg16").select("robust")
            ('block5', 'fc1', 'fc2')
        """
        if which == "all":
            return self.layers
        if which == "robust":
            if not self.robust_layers:
                raise ValueError(
                    f"preset {self.name!r} has no robust layers (the paper gives none for this "
                    f"architecture); use '{self.name}' for all hook points or name layers explicitly"
                )
            return self.robust_layers
        raise ValueError(f"expected the subset 'all' or 'robust', got {which!r}")


_REGISTRY: dict[str, LayerPreset] = {}


def register_preset(preset: LayerPreset, *, overwrite: bool = False) -> LayerPreset:
    """Add a preset to the registry.

    Args:
        preset: the preset to add.
        overwrite: replace an existing preset of the same name instead of raising.

    Returns:
        The preset, so the call can be used as an expression.

    Raises:
        ValueError: a preset with that name exists and ``overwrite`` is False.

    Example:
        >>> _ = register_preset(LayerPreset(name="doc-example", layers=("0",)), overwrite=True)
        >>> "doc-example" in list_presets()
        True
    """
    if preset.name in _REGISTRY and not overwrite:
        raise ValueError(f"a layer preset named {preset.name!r} already exists; pass overwrite=True")
    _REGISTRY[preset.name] = preset
    return preset


def list_presets() -> list[str]:
    """Names of all registered presets, sorted.

    Returns:
        The preset names.

    Example:
        >>> "resnet18" in list_presets()
        True
    """
    return sorted(_REGISTRY)


def get_preset(name: str) -> LayerPreset:
    """Look up a preset by name.

    Args:
        name: a registered preset name.

    Returns:
        The preset.

    Raises:
        ValueError: no such preset; the message lists the valid names.

    Example:
        >>> get_preset("torchvision-resnet18").mask_layer
        'avgpool'
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown layer preset {name!r}; expected one of {', '.join(list_presets())}"
        ) from None


def preset_for_model(model: nn.Module) -> LayerPreset | None:
    """Find the preset that describes ``model``, if any.

    The model's ``ib_preset`` attribute wins; otherwise each preset's ``matches`` predicate is tried.

    Args:
        model: the model to describe.

    Returns:
        The preset, or None when none applies.

    Example:
        >>> import torch.nn as nn
        >>> preset_for_model(nn.Linear(2, 2)) is None
        True
    """
    name = getattr(model, "ib_preset", None)
    if isinstance(name, str):
        return get_preset(name)
    for preset in _REGISTRY.values():
        if preset.matches is not None and preset.matches(model):
            return preset
    return None


def _is_torchvision_resnet18(model: nn.Module) -> bool:
    cls = type(model)
    if cls.__name__ != "ResNet" or not cls.__module__.startswith("torchvision"):
        return False
    layers = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    return all(isinstance(layer, nn.Sequential) and len(layer) == 2 for layer in layers) and type(
        layers[0][0]
    ).__name__ == "BasicBlock"


_RESNET_BLOCKS = tuple(f"layer{i}.{j}" for i in range(1, 5) for j in range(2))

register_preset(
    LayerPreset(
        name="vgg16",
        layers=("block1", "block2", "block3", "block4", "block5", "fc1", "fc2"),
        robust_layers=("block5", "fc1", "fc2"),
        mask_layer="block5",
        mask_k=10,
        description="IB-RAR VGG-16 (BN): 5 conv blocks + FC1, FC2; robust = block 5, FC1, FC2 (Table III)",
    )
)
register_preset(
    LayerPreset(
        name="resnet18",
        layers=("stem", *_RESNET_BLOCKS, "pool"),
        mask_layer="pool",
        mask_k=20,
        record_masked=False,  # the authors record the pooled vector, then mask it (resnet.py L192-201)
        description="IB-RAR ResNet-18 (CIFAR stem): stem, 8 BasicBlocks, pooled 512-vector",
    )
)
register_preset(
    LayerPreset(
        name="wrn28-10",
        layers=(
            "conv1",
            *(f"layer{i}.{j}" for i in range(1, 4) for j in range(4)),
            "pool",
        ),
        mask_layer="layer2",
        mask_k=10,
        description="IB-RAR WRN-28-10: conv1, 3x4 wide blocks (pre-activation sums), pooled vector",
    )
)
register_preset(
    LayerPreset(
        name="torchvision-resnet18",
        layers=("relu", *_RESNET_BLOCKS, "avgpool"),
        mask_layer="avgpool",
        mask_k=20,
        record_masked=False,  # as the authors' ResNet-18
        description="torchvision.models.resnet18: stem ReLU, 8 BasicBlocks, avgpool",
        matches=_is_torchvision_resnet18,
    )
)
register_preset(
    LayerPreset(
        name="digits-cnn",
        layers=("conv1", "conv2", "conv3", "fc1"),
        robust_layers=("conv3", "fc1"),
        mask_layer="conv3",
        mask_k=3,
        description="small CNN for 8x8 digits: 3 conv blocks + FC1; robust = last conv block, FC1",
    )
)
register_preset(
    LayerPreset(
        name="lenet5",
        layers=("conv1", "conv2", "fc1", "fc2"),
        robust_layers=("conv2", "fc1", "fc2"),
        mask_layer="conv2",
        mask_k=1,
        description="LeNet-5 (entropic paper): activated conv1, conv2, fc1, fc2",
    )
)
register_preset(
    LayerPreset(
        name="keras-mnist-cnn",
        layers=("conv1", "conv2", "fc1", "fc2"),
        robust_layers=("conv2", "fc1", "fc2"),
        mask_layer="conv2",
        mask_k=3,
        description="Keras MNIST example CNN (entropic paper): conv 32, conv 64, dense 512, 84",
    )
)
register_preset(
    LayerPreset(
        name="keras-cifar-cnn",
        layers=("conv1", "conv2", "conv3", "conv4", "fc1", "fc2", "fc3", "fc4", "fc5"),
        robust_layers=("conv4", "fc1", "fc2"),
        mask_layer="conv4",
        mask_k=3,
        description="Keras CIFAR-10 example CNN (entropic paper): 4 conv + 5 dense",
    )
)
