"""Entropic retraining (Sperl & Böttinger): layer entropies, the entropy flow ``E_T`` and its loss.

The paper measures a layer's activation vector ``h_i`` (the output of layer ``i`` *after* its
activation function) with an entropy-like value (Eq. 6)::

    E(h_i) = - sum_j h_j log h_j          (per sample, over all N_i elements of the layer output)

and defines two network-level values over the M hooked layers, the last of which is the output
layer (Eq. 7 and Eq. 8)::

    E_N = (1/M) sum_i E(h_i) / N_i                                     (analysis only)
    E_T = (1/(M-1)) sum_{i=1}^{M-1} [E(h_i) - E(h_{i+1})] = (E(h_1) - E(h_M)) / (M-1)

Entropic retraining fine-tunes a pretrained model with (Eq. 9-11)::

    L = CE(y, y_hat) + lam * (E_T_hat - sigma * E_T_ref)^2

where ``E_T_ref`` is the pretrained model's value (a constant) and ``E_T_hat`` is computed on the
model being retrained; ``sigma > 1`` is meant to *increase* ``E_T``.

**The telescoping identity.** Eq. 8 telescopes: every intermediate layer is added once and
subtracted once, so ``E_T`` depends only on the first hooked layer and on the output layer. The
intermediate layers matter only through M, which scales ``E_T`` by ``1/(M-1)`` and therefore the
effect of ``lam`` on the squared penalty by ``1/(M-1)**2``. Report M together with ``lam``.
:func:`entropy_flow` uses the telescoped form; :func:`entropy_flow_terms` returns the M-1 explicit
differences, whose mean equals it.

**The output layer.** PyTorch models emit logits, so the last ``h`` is ``softmax(logits)``
(always positive and summing to 1; ``E(h_M)`` is the prediction entropy in nats).
:class:`EntropyProbe` builds the list ``[h_1, ..., h_{M-1}, softmax(logits)]`` from forward hooks.

**Zeros and negative activations** (``mode``). ``0 log 0`` is taken as 0, its continuous limit,
through ``phi(h) = where(h <= 0, 0, h * log(clamp_min(h, tiny)))``. Its value and its gradient are
finite everywhere (the gradient is 0 at and below zero, ``log(h) + 1`` above); ``torch.xlogy`` is
not used because its gradient is NaN at 0. ``h log h`` is undefined for ``h < 0``, which the paper
(ReLU networks) never meets; the choice is explicit:

* ``"relu"`` (default): ``phi(max(h, 0))``, negatives contribute 0. Faithful for ReLU networks,
  where hooked outputs are already non-negative.
* ``"abs"``: ``|h| log |h|``; a different quantity for layers with signed outputs.
* ``"strict"``: raise :class:`ValueError` naming the layer when any ``h < 0`` (this check
  synchronises with the device).

NaN activations propagate as NaN in every mode through the pure functions (they read no value, so
they stay free on accelerators); :class:`EntropicLoss` raises, naming the layer, on CPU tensors (its
``check_finite``). Values above 1 contribute negatively: ``E`` is not a true entropy. Logs are
natural; the base would only rescale ``E_T``.

Example:
    >>> import torch
    >>> import torch.nn as nn
    >>> from ib_plugins.entropic import EntropicLoss, EntropyProbe, entropy_flow
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    >>> with EntropyProbe(model, ["1"]) as probe:
    ...     logits, hs = probe.run(x)
    >>> [tuple(h.shape) for h in hs]
    [(5, 8), (5, 3)]
    >>> entropy_flow(hs).shape
    torch.Size([5])
    >>> loss = EntropicLoss(reference=1.0, lam=1.0, sigma=1.65)(logits, y, hs)
    >>> loss.backward()

The package: :mod:`~ib_plugins.entropic.entropy` (the maths), :mod:`~ib_plugins.entropic.probe` (the hooks),
:mod:`~ib_plugins.entropic.reference` (``E_T_ref``) and :mod:`~ib_plugins.entropic.loss` (:class:`EntropicLoss`).
"""

from __future__ import annotations

from ib_plugins.entropic.entropy import (
    EntropyMode,
    entropy_flow,
    entropy_flow_terms,
    entropy_terms,
    layer_entropy,
    normalized_entropy,
)
from ib_plugins.entropic.loss import EntropicLoss, EntropicLossTerms
from ib_plugins.entropic.probe import EntropyProbe
from ib_plugins.entropic.reference import compute_reference_entropy_flow

__all__ = [
    "EntropyMode",
    "entropy_terms",
    "layer_entropy",
    "entropy_flow",
    "entropy_flow_terms",
    "normalized_entropy",
    "EntropyProbe",
    "compute_reference_entropy_flow",
    "EntropicLossTerms",
    "EntropicLoss",
]
