"""Layer presets: which layers to hook, which are "robust", and where the channel mask goes.

A preset names layers by dotted ``named_modules()`` paths. Presets exist for the layouts of the
IB-RAR paper's models (VGG-16 with BatchNorm, also reachable as ``"vgg16-bn"``, ResNet-18,
WRN-28-10, as built by :mod:`ib_plugins.models`), for the small models of the model zoo, and for
common third-party models, which are recognised by their structure:

====================================  ============================================================================
preset                                model
====================================  ============================================================================
``torchvision-resnet18/34/50``        ``torchvision.models.resnet18`` / ``resnet34`` / ``resnet50``
``torchvision-wide-resnet50-2``       ``torchvision.models.wide_resnet50_2``
``torchvision-vgg{11,13,16,19}-bn``   ``torchvision.models.vgg11_bn`` / ``vgg13_bn`` / ``vgg16_bn`` / ``vgg19_bn``
``timm-resnet18/34/50``               ``timm.create_model("resnet18" / "resnet34" / "resnet50")``
====================================  ============================================================================

Where the robust layers come from: the IB-RAR paper gives robust layers only for its VGG-16
(Table III: block 5, FC1, FC2, i.e. the last convolutional block and the hidden fully connected
layers); ``torchvision-vgg16-bn`` puts those layers at their places in torchvision's VGG-16-BN. The
robust layers of the other presets in this table are **an analogy, not the paper's finding**:
the output of the last convolutional stage plus the classifier-side hidden layers
(for ResNets, which have no hidden FC layer, the pooled feature vector); each preset's
``description`` says so. Check them with ``ib-plugins select-layers`` (the paper's Table III
procedure) before relying on them. Naming another architecture's preset (``"resnet18:robust"`` on
torchvision's ResNet-18) raises an error pointing to the preset that fits
(:func:`check_preset_fits`).

A model can declare its preset with a class attribute ``ib_preset = "<name>"``.

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

__all__ = ["LayerPreset", "check_preset_fits", "get_preset", "list_presets", "preset_for_model", "register_preset"]


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


def check_preset_fits(preset: LayerPreset | str, model: nn.Module) -> LayerPreset:
    """Check that a preset's layers are submodules of ``model``; else point to the preset that fits.

    Args:
        preset: a preset or a registered preset name.
        model: the model the preset is asked for.

    Returns:
        The preset.

    Raises:
        ValueError: some of the preset's layers are not submodules of ``model``; the message names
            them and the preset that describes ``model`` (see :func:`preset_for_model`), or says
            that none does.

    Example:
        >>> import torch.nn as nn
        >>> try:
        ...     check_preset_fits("vgg16", nn.Sequential(nn.Linear(2, 2)))
        ... except ValueError as err:
        ...     print(str(err)[:70])
        ib_layers: preset 'vgg16' does not fit Sequential: its layers 'block1'
    """
    if isinstance(preset, str):
        preset = get_preset(preset)
    names = {name for name, _ in model.named_modules() if name}
    missing = [layer for layer in dict.fromkeys((*preset.layers, *preset.robust_layers)) if layer not in names]
    if not missing:
        return preset
    shown = ", ".join(repr(m) for m in missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    own = preset_for_model(model)
    model_name = type(model).__name__
    if own is not None and own.layers != preset.layers:
        uses = [repr(own.name)] + ([repr(own.name + ":robust")] if own.robust_layers else [])
        hint = (f"the preset that fits this model is {own.name!r} ({own.description.split(';')[0]}): use "
                f"{' or '.join(uses)}, or 'all'{' / ' + repr('robust') if own.robust_layers else ''} for the "
                "model's own preset")
    else:
        hint = (
            f"no preset describes {model_name}: pass dotted layer names (see ib_plugins.list_layer_names(model)) "
            f"or one of the presets of other models ({', '.join(list_presets())}) that fits"
        )
    return _raise(
        f"ib_layers: preset {preset.name!r} does not fit {model_name}: its layers {shown} are not submodules of "
        f"{model_name} ({preset.name!r} describes {preset.description.split(':')[0] or preset.name}); {hint}"
    )


def _raise(message: str) -> LayerPreset:
    from ib_plugins.errors import UnknownLayerError  # a ValueError: the preset's layers are not the model's

    raise UnknownLayerError(message)


def _is_torchvision(model: nn.Module, class_name: str) -> bool:
    cls = type(model)
    return cls.__name__ == class_name and cls.__module__.startswith("torchvision")


def _is_timm(model: nn.Module, class_name: str) -> bool:
    cls = type(model)
    return cls.__name__ == class_name and cls.__module__.startswith("timm")


def _resnet_layout(model: nn.Module, blocks: tuple[int, ...], block: str, width: int) -> bool:
    """ResNet stages ``layer1..layer4`` with ``blocks`` blocks of type ``block``, first conv ``width`` wide."""
    layers = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if not all(isinstance(layer, nn.Sequential) for layer in layers):
        return False
    if tuple(len(layer) for layer in layers) != blocks or type(layers[0][0]).__name__ != block:
        return False
    conv = getattr(layers[0][0], "conv1", None)
    return isinstance(conv, nn.Conv2d) and conv.out_channels == width


def _torchvision_resnet(blocks: tuple[int, ...], block: str, width: int = 64) -> Callable[[nn.Module], bool]:
    def matches(model: nn.Module) -> bool:
        return _is_torchvision(model, "ResNet") and _resnet_layout(model, blocks, block, width)

    return matches


def _timm_resnet(blocks: tuple[int, ...], block: str, width: int = 64) -> Callable[[nn.Module], bool]:
    def matches(model: nn.Module) -> bool:
        return (_is_timm(model, "ResNet") and _resnet_layout(model, blocks, block, width)
                and hasattr(model, "act1") and hasattr(model, "global_pool"))

    return matches


def _is_torchvision_resnet18(model: nn.Module) -> bool:
    return _torchvision_resnet((2, 2, 2, 2), "BasicBlock")(model)


#: torchvision's VGG configurations: number of convolutions -> (convolutions per block).
_VGG_CONVS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}


def _vgg_bn_pools(depth: int) -> tuple[int, ...]:
    """Indices of the five max-pools in ``features`` of torchvision's ``vgg<depth>_bn`` (Conv-BN-ReLU units)."""
    pools, index = [], 0
    for convs in _VGG_CONVS[depth]:
        index += 3 * convs
        pools.append(index)
        index += 1
    return tuple(pools)


def _torchvision_vgg_bn(depth: int) -> Callable[[nn.Module], bool]:
    def matches(model: nn.Module) -> bool:
        features, classifier = getattr(model, "features", None), getattr(model, "classifier", None)
        if not _is_torchvision(model, "VGG") or not isinstance(features, nn.Sequential):
            return False
        if not isinstance(classifier, nn.Sequential) or len(classifier) != 7:
            return False
        convs = sum(isinstance(m, nn.Conv2d) for m in features)
        pools = tuple(i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d))
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in features)
        return has_bn and convs == depth - 3 and pools == _vgg_bn_pools(depth)

    return matches


_ANALOGY = ("an analogy to the paper's VGG-16 choice (last conv block + hidden FC layers), not a finding of the "
            "paper, which gives robust layers only for its VGG-16")


def _resnet_blocks(blocks: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(f"layer{i + 1}.{j}" for i, n in enumerate(blocks) for j in range(n))


_RESNET_BLOCKS = _resnet_blocks((2, 2, 2, 2))


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
        name="vgg16-bn",
        layers=("block1", "block2", "block3", "block4", "block5", "fc1", "fc2"),
        robust_layers=("block5", "fc1", "fc2"),
        mask_layer="block5",
        mask_k=10,
        description="IB-RAR VGG-16 (BN), the same preset as 'vgg16' under torchvision's name; robust = block 5, "
                    "FC1, FC2 (Table III)",
    )
)
register_preset(
    LayerPreset(
        name="vgg-mini",
        layers=("block1", "block2", "block3", "block4", "fc1", "fc2"),
        robust_layers=("block4", "fc1", "fc2"),
        mask_layer="block4",
        mask_k=3,
        description="CPU-sized VGG (4 conv blocks + FC1, FC2); robust = last conv block, FC1, FC2 by analogy with "
                    "VGG-16's block 5, FC1, FC2 (not a finding of the paper)",
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


# -- third-party models, recognised by their structure -----------------------------------------------
for _depth, _blocks, _block in ((18, (2, 2, 2, 2), "BasicBlock"), (34, (3, 4, 6, 3), "BasicBlock"),
                                (50, (3, 4, 6, 3), "Bottleneck")):
    _names = _resnet_blocks(_blocks)
    _kind = f"{sum(_blocks)} {_block}s"
    register_preset(
        LayerPreset(
            name=f"torchvision-resnet{_depth}",
            layers=("relu", *_names, "avgpool"),
            robust_layers=(_names[-1], "avgpool"),
            mask_layer="avgpool",
            mask_k=20,
            record_masked=False,  # as the authors' ResNet-18: the pooled vector is recorded, then masked
            description=f"torchvision.models.resnet{_depth}: stem ReLU, {_kind}, avgpool; robust = {_names[-1]} (last "
                        f"stage) + avgpool (pooled vector): {_ANALOGY}",
            matches=_torchvision_resnet(_blocks, _block),
        )
    )
    register_preset(
        LayerPreset(
            name=f"timm-resnet{_depth}",
            layers=("act1", *_names, "global_pool"),
            robust_layers=(_names[-1], "global_pool"),
            mask_layer="global_pool",
            mask_k=20,
            record_masked=False,
            description=f"timm resnet{_depth} (timm.create_model('resnet{_depth}'), also its stem variants such as "
                        f"resnet{_depth}d): stem act1, {_kind}, global_pool; "
                        f"robust = {_names[-1]} (last stage) + global_pool (pooled vector): {_ANALOGY}",
            matches=_timm_resnet(_blocks, _block),
        )
    )
_names = _resnet_blocks((3, 4, 6, 3))
register_preset(
    LayerPreset(
        name="torchvision-wide-resnet50-2",
        layers=("relu", *_names, "avgpool"),
        robust_layers=(_names[-1], "avgpool"),
        mask_layer="avgpool",
        mask_k=20,
        record_masked=False,
        description=f"torchvision.models.wide_resnet50_2: stem ReLU, 16 wide Bottlenecks, avgpool; robust = "
                    f"{_names[-1]} (last stage) + avgpool (pooled vector): {_ANALOGY}",
        matches=_torchvision_resnet((3, 4, 6, 3), "Bottleneck", width=128),
    )
)
for _depth in _VGG_CONVS:
    _pools = tuple(f"features.{i}" for i in _vgg_bn_pools(_depth))
    register_preset(
        LayerPreset(
            name=f"torchvision-vgg{_depth}-bn",
            layers=(*_pools, "classifier.1", "classifier.4"),
            robust_layers=(_pools[-1], "classifier.1", "classifier.4"),
            mask_layer=_pools[-1],
            mask_k=10,
            description=f"torchvision.models.vgg{_depth}_bn: the 5 conv blocks (their max-pools {', '.join(_pools)}) + "
                        f"FC1, FC2 (classifier.1, classifier.4, after ReLU); robust = block 5, FC1, FC2: "
                        + ("the paper's Table III layers at their places in torchvision's VGG-16-BN (whose "
                           "classifier differs: 25088-4096-4096 with dropout)" if _depth == 16 else _ANALOGY),
            matches=_torchvision_vgg_bn(_depth),
        )
    )
del _depth, _blocks, _block, _names, _kind, _pools
