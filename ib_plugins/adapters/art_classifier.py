"""The ART classifier of an :class:`~ib_plugins.IBModel`: :class:`IBPyTorchClassifier` and the factories that build it.

:func:`make_art_classifier` (the classifier that trains with the IB term) and
:func:`make_art_proxy_classifier` (a hook-free copy for attacks that need one).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ib_plugins._optional import require
from ib_plugins.wrap import IBModel

art = require("art", purpose="ib_plugins.adapters.art_training", extra="art")

import numpy as np  # noqa: E402  (ART depends on numpy and tqdm)
from art.estimators.classification import PyTorchClassifier  # noqa: E402
from art.utils import check_and_transform_label_format  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ib_plugins.adapters.art_loss import IBCrossEntropyLoss, _check_hooks, _class_indices, _require_ib_model

logger = logging.getLogger("ib_plugins.adapters.art_training")  # the name its records had before the split


def _ib_model_of(classifier: Any) -> IBModel:
    if not isinstance(classifier, PyTorchClassifier):
        raise TypeError(
            f"classifier: expected an ART PyTorchClassifier (build it with make_art_classifier), got "
            f"{type(classifier).__name__}"
        )
    if isinstance(classifier, IBPyTorchClassifier):
        return classifier.ib_model
    return _require_ib_model(classifier.model, "classifier.model")


# ---------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------
class _IBModelWrapper(nn.Module):
    """ART's model wrapper for an :class:`~ib_plugins.IBModel`, shaped as ART's own for the network.

    ``_model`` is the network (what ART's ``PyTorchClassifier.model`` returns, and what ART reads
    ``named_modules()``, ``state_dict()`` and the layer names from); ``ib_model`` the IBModel, whose
    forward this one runs (so training forwards are recorded and masked). Like ART's wrapper for a
    non-``Sequential`` model, the forward returns ``[logits]``.
    """

    def __init__(self, ib_model: IBModel) -> None:
        super().__init__()
        self._model = ib_model.model
        self.ib_model = ib_model

    def forward(self, x: Tensor) -> list[Tensor]:
        return [self.ib_model(x)]

    @property
    def get_layers(self) -> list[str]:
        """The network's top-level children, as ART's wrapper lists them."""
        return list(self._model._modules)


class IBPyTorchClassifier(PyTorchClassifier):
    """ART's ``PyTorchClassifier`` for an :class:`~ib_plugins.IBModel`; gives the mask its labels in ``fit``.

    It answers ART's classifier API as the ``PyTorchClassifier`` built on the *unwrapped* network
    would, so attacks, defences, detectors and tools that take a ``PyTorchClassifier`` work on it:

    * ``model`` is the network inside the IBModel (:attr:`ib_model` is the IBModel), so code that
      reads ``classifier.model`` — its children, ``named_modules()``, ``state_dict()``, or calls it
      (ART's AWP/OAAT trainers) — sees the same network as with a plain classifier; a training
      forward through ``classifier.model(x)`` is still recorded for the IB term (see
      :class:`~ib_plugins.IBModel`);
    * ``layer_names`` are the network's own top-level layers (not the wrapper's ``model`` and
      ``bottleneck``), and :meth:`get_activations` takes those names, their indices, or any dotted
      ``named_modules()`` path of the network (``"layer1.0.conv1"``, also with a ``"model."``
      prefix); its hook lives only for the call (ART's own leaves one behind per call);
    * :meth:`clone_for_refitting` returns a fresh ``IBPyTorchClassifier`` whose
      :class:`IBCrossEntropyLoss` is bound to the *cloned* model, so the clone trains with the IB term;
    * :meth:`save` writes the network's ``state_dict`` (the keys a plain classifier writes), and the
      ``repr`` names ``art.estimators.classification.pytorch.PyTorchClassifier``, its loss and
      optimizer as ART's does, then the IB term;
    * predictions, ``class_gradient``, ``loss_gradient``, ``compute_loss``, preprocessing, clip
      values, ``get_params``/``set_params`` are ART's (eval-mode forwards carry no IB term).

    :meth:`fit` differs when the model has a channel mask, or :class:`IBAdversarialTrainer` provided
    the clean batch: it runs its own loop (an adapted copy of ART 1.20.1's) that enters
    :meth:`IBModel.labels(y_batch) <ib_plugins.IBModel.labels>` around every batch, so the mask sees
    the labels of exactly the rows it masks. Otherwise it is ART's ``fit``. Build it with
    :func:`make_art_classifier`.

    Args:
        model: the :class:`~ib_plugins.IBModel`.
        loss: the loss (usually :class:`IBCrossEntropyLoss`).
        *args: the rest of ``PyTorchClassifier``'s positional arguments (``input_shape``, ``nb_classes``...).
        **kwargs: everything else ``PyTorchClassifier`` takes.

    Raises:
        TypeError: ``model`` is not an :class:`~ib_plugins.IBModel`.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
        >>> clf = IBPyTorchClassifier(ib, IBCrossEntropyLoss(ib), input_shape=(4,), nb_classes=3,
        ...                           optimizer=torch.optim.SGD(ib.parameters(), lr=0.1), device_type="cpu")
        >>> clf.ib_model is ib
        True
    """

    def __init__(self, model: IBModel, loss: nn.Module, *args: Any, **kwargs: Any) -> None:
        _require_ib_model(model, "model")
        super().__init__(model, loss, *args, **kwargs)
        self._ib_clean_inputs: np.ndarray | None = None

    def _make_model_wrapper(self, model: nn.Module) -> nn.Module:
        # ART's wrapper keeps the model it was given as ``_model``: ``classifier.model``, ART's
        # ``layer_names``, ``_model._model.named_modules()``/``state_dict()`` (OAAT, AWP, save) then
        # all see the IBModel's names. Ours keeps the *network* there, so every one of them answers
        # as for a classifier of the plain network, and runs the forward through the IBModel.
        return _IBModelWrapper(_require_ib_model(model, "model"))

    @property
    def ib_model(self) -> IBModel:
        """The wrapped :class:`~ib_plugins.IBModel` (``self.model`` is the network inside it, as for a plain classifier)."""
        return self._model.ib_model  # type: ignore[return-value]

    # -- ART's classifier API, answered for the unwrapped network ----------------------------------
    def _activation_module(self, layer: Any) -> tuple[str, nn.Module]:
        network = self.ib_model.model
        names = self._layer_names
        if isinstance(layer, str):
            key = layer
            if key not in names and key.startswith("model."):
                key = key[len("model."):]
            modules = dict(network.named_modules())
            if key in modules and key != "":
                return key, modules[key]
            import difflib

            close = difflib.get_close_matches(layer, [n for n in modules if n], n=3)
            hint = f"; close matches: {', '.join(map(repr, close))}" if close else ""
            raise ValueError(
                f"Layer name {layer} not supported: expected one of layer_names {names} or a dotted "
                f"named_modules() path of {type(network).__name__}{hint}"
            )
        if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
            if not -len(names) <= int(layer) < len(names):
                raise ValueError(f"layer: expected an index in [{-len(names)}, {len(names) - 1}] of layer_names "
                                 f"{names}, got {layer}")
            name = names[int(layer)]
            return name, network.get_submodule(name)
        raise TypeError("Layer must be of type str or int")

    def get_activations(  # type: ignore[override]
        self, x: np.ndarray | Tensor, layer: int | str | None = None, batch_size: int = 128, framework: bool = False
    ) -> np.ndarray | Tensor:
        """The output of a layer of the network for ``x``, as ART's ``get_activations``.

        Args:
            x: inputs (numpy array or tensor).
            layer: an index into :attr:`layer_names`, one of its names, or any dotted
                ``named_modules()`` path of the network (a ``"model."`` prefix is accepted).
            batch_size: samples per forward.
            framework: return the tensor (with its graph) of one forward of all of ``x``.

        Returns:
            The activations, first dimension the batch.

        Raises:
            ValueError: an unknown layer name (close matches are listed) or an index out of range.
            TypeError: ``layer`` is neither a str nor an int.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU())
            >>> ib = wrap_model(net, ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> clf.layer_names, clf.get_activations(np.ones((2, 4), dtype=np.float32), "1").shape
            (['0', '1', '2'], (2, 3))
        """
        from ib_plugins._context import _inference_modes

        name, module = self._activation_module(layer)
        x_pre, _ = self._apply_preprocessing(x=x, y=None, fit=False, no_grad=not framework)
        captured: dict[str, Tensor] = {}

        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            captured[name] = output

        handle = module.register_forward_hook(hook)
        try:
            with _inference_modes(self._model):
                if framework:
                    x_t = x_pre if isinstance(x_pre, Tensor) else torch.from_numpy(x_pre)
                    self._model(x_t.to(self._device))
                    return captured[name]
                results = []
                with torch.no_grad():
                    for begin in range(0, len(x_pre), batch_size):
                        self._model(torch.from_numpy(x_pre[begin : begin + batch_size]).to(self._device))
                        results.append(captured[name].detach().cpu().numpy())
        finally:
            handle.remove()
        return np.concatenate(results)

    def clone_for_refitting(self) -> IBPyTorchClassifier:
        """A copy to refit from scratch: same network and IB configuration, fresh weights and optimizer.

        Unlike ART's (which reuses the original loss object), the clone's
        :class:`IBCrossEntropyLoss` is bound to the *cloned* :class:`~ib_plugins.IBModel`, so fitting
        the clone adds the IB term of its own forwards (ART's ``DeepPartitionEnsemble``, shadow
        models and several defences clone this way).

        Returns:
            The new classifier, its weights re-initialised.

        Raises:
            ValueError: the classifier has no optimizer.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> clone = clf.clone_for_refitting()
            >>> clone.loss.ib_model is clone.ib_model, clone.model is not clf.model
            (True, True)
        """
        import copy

        if self._optimizer is None:
            raise ValueError("optimizer: clone_for_refitting needs the classifier's optimizer, got None")
        model = copy.deepcopy(self.ib_model)
        optimizer = type(self._optimizer)(model.parameters(), **self._optimizer.defaults)  # type: ignore[call-arg]
        loss = self._loss
        if isinstance(loss, IBCrossEntropyLoss):
            loss = IBCrossEntropyLoss(
                model, ib_pass=loss.ib_pass, x_for_ib=loss.x_for_ib, weight=loss.weight,
                ignore_index=loss.ignore_index, reduction=loss.reduction, label_smoothing=loss.label_smoothing,
            )
        clone = type(self)(model, loss, self.input_shape, self.nb_classes, optimizer=optimizer)
        clone.reset()
        params = self.get_params()
        for key in ("model", "optimizer", "loss"):  # the clone keeps its own
            params.pop(key, None)
        clone.set_params(**params)
        return clone

    def save(self, filename: str, path: str | None = None) -> None:
        """Save the network's ``state_dict`` (and the optimizer's), as a plain classifier would.

        The files are ``<filename>.model`` (the unwrapped network's keys, so a plain
        ``PyTorchClassifier`` of the same network loads them) and ``<filename>.optimizer``.

        Args:
            filename: file name (without extension).
            path: folder; None = ART's ``ART_DATA_PATH``.

        Example:
            >>> import os, tempfile, torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
            >>> ib = wrap_model(net, ["1"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> folder = tempfile.mkdtemp()
            >>> clf.save("m", path=folder)
            >>> sorted(torch.load(os.path.join(folder, "m.model"), weights_only=True))
            ['1.bias', '1.weight']
        """
        import os

        from art import config as art_config

        full_path = os.path.join(art_config.ART_DATA_PATH if path is None else path, filename)
        os.makedirs(os.path.dirname(full_path) or ".", exist_ok=True)
        torch.save(self.ib_model.model.state_dict(), full_path + ".model")
        if self._optimizer is not None:
            torch.save(self._optimizer.state_dict(), full_path + ".optimizer")
        logger.info("Model state dict saved in path: %s.model", full_path)

    def __getstate__(self) -> dict[str, Any]:
        # ART pickles by writing the weights to a file in ART_DATA_PATH and reading it back; the
        # IBModel's state travels inside the pickle instead (no file is written).
        state = self.__dict__.copy()
        state["_ib_inner_model"] = state["_model"].ib_model
        for key in ("_model_wrapper", "_device", "_model"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        model = state.pop("_ib_inner_model")
        self.__dict__.update(state)
        model.eval()
        self._model = self._make_model_wrapper(model)
        self._device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        self._model.to(self._device)

    def __repr__(self) -> str:
        loss = self._loss
        loss_text = "CrossEntropyLoss()" if isinstance(loss, IBCrossEntropyLoss) else repr(loss)
        ib_text = (f" + the IB term of {loss!r}" if isinstance(loss, IBCrossEntropyLoss)
                   else " (this loss adds no IB term)")
        return (
            f"{self.__module__}.{type(self).__name__}, an art.estimators.classification.pytorch.PyTorchClassifier("
            f"model={self._model}, loss={loss_text}, optimizer={self._optimizer}, input_shape={self._input_shape}, "
            f"nb_classes={self.nb_classes}, channels_first={self.channels_first}, clip_values={self.clip_values!r}, "
            f"preprocessing_defences={self.preprocessing_defences}, "
            f"postprocessing_defences={self.postprocessing_defences}, preprocessing={self.preprocessing}){ib_text}"
        )

    @contextmanager
    def clean_inputs(self, x_clean: np.ndarray) -> Iterator[None]:
        """Declare the clean counterpart (row-aligned) of the ``x`` passed to ``fit`` inside the block.

        Args:
            x_clean: clean inputs, same shape as that ``x``.

        Yields:
            Nothing.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> with clf.clean_inputs(np.zeros((2, 4), dtype=np.float32)):
            ...     pass
        """
        previous = self._ib_clean_inputs
        self._ib_clean_inputs = x_clean
        try:
            yield
        finally:
            self._ib_clean_inputs = previous

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        nb_epochs: int = 10,
        training_mode: bool = True,
        drop_last: bool = False,
        scheduler: Any = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        """Fit the classifier, giving each batch's labels to the channel mask.

        Same arguments as ``PyTorchClassifier.fit``. A call that trains on more than one batch
        restarts the mask schedule at every epoch; a single-batch call (what ``AdversarialTrainer``
        makes) counts as one batch of the caller's epoch and is not shuffled.

        Args:
            x: training data.
            y: labels (indices or one-hot).
            batch_size: batch size.
            nb_epochs: epochs.
            training_mode: model mode during training.
            drop_last: drop the last incomplete batch.
            scheduler: stepped once per epoch of this call.
            verbose: progress bar.
            **kwargs: ignored, as in ART.

        Raises:
            RuntimeError: the IBModel was unwrapped.
            ValueError: no optimizer, or clean inputs of another length than ``x``.

        Example:
            >>> import torch.nn as nn
            >>> from ib_plugins import wrap_model
            >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
            >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
            ...                           input_shape=(4,), nb_classes=3)
            >>> clf.fit(np.random.rand(8, 4).astype(np.float32), np.arange(8) % 3, batch_size=4, nb_epochs=1)
            >>> clf.loss.num_ib_terms
            2
        """
        ib_model = self.ib_model
        _check_hooks(ib_model)
        clean = self._ib_clean_inputs
        if ib_model.mask is None and clean is None:
            try:
                super().fit(
                    x, y, batch_size=batch_size, nb_epochs=nb_epochs, training_mode=training_mode,
                    drop_last=drop_last, scheduler=scheduler, verbose=verbose, **kwargs,
                )
            finally:
                ib_model.clear_records()
            return
        # Adapted from ART 1.20.1 PyTorchClassifier.fit (pytorch.py 366-454): the labels context per
        # batch, the clean batch for the loss, no shuffling of a single batch (keeps rows aligned).
        if self._optimizer is None:
            raise ValueError(
                "optimizer: training needs an optimizer, got None (pass optimizer= to make_art_classifier)"
            )
        if self._use_amp:  # pragma: no cover - apex is not supported by this loop
            raise NotImplementedError("IBPyTorchClassifier.fit with a channel mask does not support use_amp=True")
        if clean is not None and len(clean) != len(x):
            raise ValueError(f"clean inputs: expected {len(x)} rows (as x), got {len(clean)}")
        self._model.train(mode=training_mode)
        y = check_and_transform_label_format(y, nb_classes=self.nb_classes)
        x_pre, y_pre = self._apply_preprocessing(x, y, fit=True)
        y_pre = self.reduce_labels(y_pre)
        x_t, y_t = torch.from_numpy(x_pre), torch.from_numpy(y_pre)
        c_t = None
        loss_fn = self._loss
        if clean is not None and isinstance(loss_fn, IBCrossEntropyLoss) and loss_fn.wants_clean_batch:
            c_t = torch.from_numpy(self._apply_preprocessing(clean, y, fit=True)[0])
        n = len(x_t)
        nb_batches = n // batch_size if drop_last else math.ceil(n / batch_size)
        for _ in tqdm(range(nb_epochs), disable=not verbose, desc="Epochs"):
            if nb_batches > 1:
                ib_model.start_epoch()
            order = torch.randperm(n) if nb_batches > 1 else torch.arange(n)
            for b in range(nb_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x_b, y_b = x_t[idx].to(self._device), y_t[idx].to(self._device)
                y_idx = _class_indices(y_b)
                stash = nullcontext() if c_t is None else loss_fn.clean_batch(c_t[idx].to(self._device), y_idx)
                self._optimizer.zero_grad()
                try:
                    with ib_model.labels(y_idx), stash:
                        loss = self._loss(self._model(x_b)[-1], y_b)
                    loss.backward()
                    self._optimizer.step()
                finally:
                    ib_model.clear_records()
            if scheduler is not None:
                scheduler.step()

    def fit_generator(self, generator: Any, nb_epochs: int = 20, verbose: bool = False, **kwargs: Any) -> None:
        """ART's ``fit_generator``; refuses a channel mask (use :meth:`fit`, which gives it labels).

        Args:
            generator: an ART data generator.
            nb_epochs: epochs.
            verbose: progress bar.
            **kwargs: passed to ART.

        Raises:
            NotImplementedError: the model has a channel mask.
            RuntimeError: the IBModel was unwrapped.
        """
        ib_model = self.ib_model
        _check_hooks(ib_model)
        if ib_model.mask is not None:
            raise NotImplementedError(
                "IBPyTorchClassifier.fit_generator cannot give the channel mask its labels; use fit(x, y)"
            )
        try:
            super().fit_generator(generator, nb_epochs=nb_epochs, verbose=verbose, **kwargs)
        finally:
            ib_model.clear_records()


def make_art_classifier(
    ib_model: IBModel,
    *,
    loss: nn.Module | None = None,
    optimizer: torch.optim.Optimizer,
    input_shape: tuple[int, ...],
    nb_classes: int,
    clip_values: tuple[float, float] | None = (0.0, 1.0),
    **kwargs: Any,
) -> IBPyTorchClassifier:
    """Build the ART classifier for an :class:`~ib_plugins.IBModel` with the IB loss.

    Args:
        ib_model: the wrapped network (build the optimizer from ``ib_model.parameters()``).
        loss: the training loss; None = ``IBCrossEntropyLoss(ib_model)``. Another loss trains
            without the IB term (the channel mask still works).
        optimizer: the optimizer.
        input_shape: shape of one input, e.g. ``(1, 28, 28)``.
        nb_classes: number of classes.
        clip_values: input range; inputs are expected in ``[0, 1]`` (normalise inside the model).
        **kwargs: passed to ``PyTorchClassifier`` (``device_type`` defaults to the model's device).

    Returns:
        The :class:`IBPyTorchClassifier`.

    Raises:
        TypeError: ``ib_model`` is not an :class:`~ib_plugins.IBModel` or ``loss`` not an ``nn.Module``.
        ValueError: an :class:`IBCrossEntropyLoss` bound to another model.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
        >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
        ...                           input_shape=(4,), nb_classes=3)
        >>> type(clf.loss).__name__, clf.ib_model is ib, clf.model is ib.model
        ('IBCrossEntropyLoss', True, True)
    """
    _require_ib_model(ib_model, "ib_model")
    if loss is None:
        loss = IBCrossEntropyLoss(ib_model)
    elif not isinstance(loss, nn.Module):
        raise TypeError(f"loss: expected a torch.nn.Module loss (e.g. IBCrossEntropyLoss), got {type(loss).__name__}")
    elif isinstance(loss, IBCrossEntropyLoss) and loss.ib_model is not ib_model:
        raise ValueError("loss: this IBCrossEntropyLoss reads the records of another IBModel than ib_model")
    if "device_type" not in kwargs:
        param = next(ib_model.parameters(), None)
        kwargs["device_type"] = "gpu" if param is not None and param.device.type == "cuda" else "cpu"
    return IBPyTorchClassifier(
        ib_model, loss, input_shape=tuple(input_shape), nb_classes=nb_classes, optimizer=optimizer,
        clip_values=clip_values, **kwargs,
    )


# nn.Module's hook registries (torch 2.x); the proxy's copies are emptied.
_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks",
)


def make_art_proxy_classifier(
    classifier: PyTorchClassifier,
    *,
    optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
    loss: nn.Module | None = None,
) -> PyTorchClassifier:
    """A proxy classifier for AWP/OAAT: an independent hook-free copy of the main classifier's model.

    AWP and OAAT load the main classifier's ``model.state_dict()`` into the proxy (strict), so the
    proxy holds a copy of exactly that: of the network for an :class:`IBPyTorchClassifier` (whose
    ``model`` is the network), of the whole ``IBModel`` for a plain ``PyTorchClassifier`` built
    around one. The copy has no hooks at all (neither the IBModel's nor any
    other forward/backward hook left on the network, e.g. by ART's own ``get_activations``): its
    forwards are plain, and it trains with plain cross-entropy by default (the weight perturbation
    then maximises CE only).

    Args:
        classifier: the main classifier (its model must be an :class:`~ib_plugins.IBModel`).
        optimizer_factory: builds the proxy optimizer from its parameters; default SGD(lr=0.01).
        loss: the proxy's loss; default ``nn.CrossEntropyLoss()``.

    Returns:
        A ``PyTorchClassifier`` around the copy.

    Raises:
        TypeError: ``classifier`` is not an ART ``PyTorchClassifier`` around an IBModel.

    Example:
        >>> import torch.nn as nn
        >>> from ib_plugins import wrap_model
        >>> ib = wrap_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU()), ["2"], num_classes=3)
        >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
        ...                           input_shape=(4,), nb_classes=3)
        >>> proxy = make_art_proxy_classifier(clf)
        >>> proxy.model is not ib.model, type(proxy.model).__name__, ib.has_hooks
        (True, 'Sequential', True)
    """
    import copy

    ib_model = _ib_model_of(classifier)
    ib_copy = copy.deepcopy(ib_model)  # hooks are copied consistently with the copy ...
    ib_copy.remove_hooks()  # ... and removed from the copy only, the IBModel's ...
    proxy_model = ib_copy.model if isinstance(classifier, IBPyTorchClassifier) else ib_copy
    for module in proxy_model.modules():  # ... and anyone else's (on the copy's modules only)
        for attr in _HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks:
                hooks.clear()
    factory = optimizer_factory or (lambda params: torch.optim.SGD(params, lr=0.01))
    return PyTorchClassifier(
        proxy_model,
        loss=loss if loss is not None else nn.CrossEntropyLoss(),
        input_shape=classifier.input_shape,
        nb_classes=classifier.nb_classes,
        optimizer=factory(proxy_model.parameters()),
        clip_values=classifier.clip_values,
        device_type="cpu" if classifier.device.type == "cpu" else "gpu",
    )
