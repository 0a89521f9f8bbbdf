"""The reference entropy flow ``E_T_ref`` of a pretrained model: :func:`compute_reference_entropy_flow`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._context import _inference_modes
from ib_plugins.entropic.entropy import EntropyMode, _check_mode, entropy_flow
from ib_plugins.entropic.probe import EntropyProbe

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# reference value
# --------------------------------------------------------------------------------------------


def _inputs_of(batch: Any) -> Any:
    if isinstance(batch, (list, tuple)):
        if not batch:
            raise ValueError("loader: expected batches (x, y, ...) or x, got an empty batch")
        return batch[0]
    return batch


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def compute_reference_entropy_flow(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    layers: Sequence[str],
    mode: EntropyMode = "relu",
    device: torch.device | str | None = None,
    progress: bool = True,
) -> float:
    """Mean per-sample ``E_T`` (Eq. 8) of a pretrained model over a data set: ``E_T_ref``.

    Runs the model in eval mode under ``torch.no_grad`` and averages over samples (not over
    batches, so the last short batch is weighted correctly). Every module's train/eval flag is
    restored afterwards, also on error, and the global RNG state is left untouched (the loop runs
    under :func:`torch.random.fork_rng`, so e.g. a shuffling ``DataLoader`` does not advance it).
    Use the *training* set, as the spec recommends (§4.3).

    Args:
        model: the pretrained network (returns logits); it is not moved.
        loader: an iterable of batches, each ``(x, y, ...)`` or ``x``.
        layers: dotted names of the hooked hidden layers, see :class:`EntropyProbe`.
        mode: treatment of negative values, see :func:`entropy_terms`.
        device: where inputs are moved; default: the device of the model's first parameter.
        progress: show a tqdm progress bar when tqdm is installed (on a terminal only).

    Returns:
        ``E_T_ref`` as a Python float.

    Raises:
        ValueError: the loader yields no samples, or ``mode``/``layers`` are invalid.
        UnknownLayerError: a layer name is not a submodule of ``model``.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> data = [(torch.randn(5, 4), torch.zeros(5)) for _ in range(3)]
        >>> ref = compute_reference_entropy_flow(model, data, layers=["1"], progress=False)
        >>> isinstance(ref, float), model.training
        (True, True)
    """
    _check_mode(mode)
    probe = EntropyProbe(model, layers)
    dev = torch.device(device) if device is not None else _model_device(model)

    iterator: Iterable[Any] = loader
    if progress:
        from ib_plugins._optional import is_available, require

        if is_available("tqdm"):
            tqdm = require("tqdm", purpose="compute_reference_entropy_flow(progress=True)")
            iterator = tqdm.tqdm(loader, desc="E_T reference", leave=False, disable=None)

    # fork the CPU RNG, and the RNG of the accelerator the inputs go to (if any)
    fork_kwargs: dict[str, Any] = {"devices": []}
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        fork_kwargs = {"devices": [index], "device_type": "cuda"}
    elif dev.type not in ("cpu", "meta"):
        fork_kwargs = {"devices": [dev.index or 0], "device_type": dev.type}

    total: Tensor | None = None
    count = 0
    try:
        with _inference_modes(model), torch.random.fork_rng(**fork_kwargs), torch.no_grad(), probe:
            for batch in iterator:
                x = _inputs_of(batch)
                if isinstance(x, Tensor):
                    x = x.to(dev)
                _, hs = probe.run(x)
                et = entropy_flow(hs, mode=mode, names=[*probe.layers, "softmax(logits)"])
                batch_sum = et.double().sum()
                total = batch_sum if total is None else total + batch_sum
                count += et.shape[0]
    finally:
        close = getattr(iterator, "close", None)
        if iterator is not loader and callable(close):
            close()
    if total is None or count == 0:
        raise ValueError("loader: expected at least one sample, got none")
    value = float(total.item()) / count
    logger.debug("E_T reference over %d samples (M=%d): %.6g", count, len(layers) + 1, value)
    return value
