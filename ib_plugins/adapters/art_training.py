"""IB-RAR inside the Adversarial Robustness Toolbox (ART 1.20.1): loss, classifier and trainers.

The core mechanism is :class:`IBCrossEntropyLoss`, handed to ART's ``PyTorchClassifier`` as its
loss. It is a ``nn.CrossEntropyLoss`` (so ART keeps integer labels and may rewrite ``.reduction``)
that adds the IB term of an :class:`~ib_plugins.IBModel` only when the logits it receives *are* the
output of a recorded training-mode forward (matched by identity with
:meth:`~ib_plugins.IBModel.find_record`). Attack gradients are computed in eval mode, record
nothing, and therefore get plain cross-entropy: the attack objective never changes.
:func:`make_art_classifier` builds the classifier (an :class:`IBPyTorchClassifier`; the
:class:`~ib_plugins.IBModel` is not an ``nn.Sequential``, so ART never unrolls it).

Stock ART trainers then train with the IB term as they are; the ``IB*`` trainer classes below add
what the stock ones cannot do: they give each batch's labels to the channel mask (so the mask's
schedule counts *training batches* and restarts every epoch), let the IB term use the clean batch
as X, offer the clean-pass option, and fix FBF's eval-mode update.

Which forward the IB term regularises (``ib_pass="trainer"``, the default) is dictated by the
trainer: it is the pass whose logits the trainer hands to ``classifier._loss``.
``ib_pass="clean"`` always regularises the clean batch, reusing the trainer's clean forward when
there is one and otherwise running one extra clean training forward per batch (which also updates
BatchNorm running statistics). X of ``I(X, T)`` is the clean batch whenever an ``IB*`` class
provides it (``x_for_ib="clean"``, the authors' choice), else the forward's own input.

| trainer (ART 1.20.1)        | ``ib_pass="trainer"`` regularises | ``ib_pass="clean"``: class, cost |
|-----------------------------|-----------------------------------|----------------------------------|
| ``AdversarialTrainer``      | the mixed batch (share ``ratio``  | ``IBAdversarialTrainer``:        |
|                             | adversarial)                      | +1 forward                       |
| ``...MadryPGD``             | the adversarial batch             | ``IBAdversarialTrainerMadryPGD``:|
|                             |                                   | +1 forward                       |
| ``...TRADESPyTorch``        | the clean batch                   | ``IB...TRADESPyTorch``: reused   |
| ``...AWPPyTorch`` PGD       | the adversarial batch             | ``IB...AWPPyTorch``: +1 forward  |
| ``...AWPPyTorch`` TRADES    | the clean batch                   | ``IB...AWPPyTorch``: reused      |
| ``...FBFPyTorch``           | stock: nothing (eval-mode update);| ``IB...FBFPyTorch``: +1 forward  |
|                             | ``IB...FBFPyTorch``: the FGSM-RS  |                                  |
|                             | adversarial batch                 |                                  |
| ``...OAATPyTorch``          | the clean batch                   | ``IB...OAATPyTorch``: reused     |
| ``...MARTPyTorch`` (ours)   | the adversarial batch (CE term)   | ``IB...MARTPyTorch``: reused     |

``...X`` is ART's ``AdversarialTrainerX`` (ours: :class:`AdversarialTrainerMARTPyTorch`) and
``IB...X`` the matching ``IBAdversarialTrainerX`` class of this module.

"+1 forward": one extra clean training forward per batch; "reused": the trainer's own clean
forward is regularised, at no extra cost. X of ``I(X, T)`` is the clean batch with every ``IB*``
class (``x_for_ib="clean"``); with a stock trainer it is the regularised forward's own input, and
``ib_pass="clean"`` is unavailable (a clear error names the class to use). The channel mask
acts only where it is given labels: under the ``IB*`` classes, and under the stock
``AdversarialTrainer``/``AdversarialTrainerMadryPGD`` through :meth:`IBPyTorchClassifier.fit`; the
stock TRADES/AWP/FBF/OAAT trainers never give it labels, so there it stays off.

How the channel mask gets each batch's labels (it needs them before the masked layer runs):

* ``_batch_process`` trainers (TRADES, AWP, FBF, OAAT, MART): :class:`IBTrainerMixin` enters
  :meth:`IBModel.labels(y_batch) <ib_plugins.IBModel.labels>` around the whole batch (ART's one-hot
  labels converted to class indices) and restarts the schedule at every epoch;
* ``AdversarialTrainer``/``AdversarialTrainerMadryPGD`` call ``classifier.fit`` once per batch:
  :meth:`IBPyTorchClassifier.fit` enters the labels context around each batch it trains on;
  :class:`IBAdversarialTrainer` also restarts the schedule at every epoch (with the stock trainers
  it counts batches across epochs).

Attack forwards run in eval mode: they are never masked and never advance the schedule.

Example:
    >>> import numpy as np, torch, torch.nn as nn
    >>> from ib_plugins import wrap_model
    >>> from art.attacks.evasion import ProjectedGradientDescent
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3))
    >>> ib = wrap_model(net, ["1"], num_classes=3)
    >>> clf = make_art_classifier(ib, optimizer=torch.optim.SGD(ib.parameters(), lr=0.1),
    ...                           input_shape=(1, 8, 8), nb_classes=3)
    >>> pgd = ProjectedGradientDescent(clf, eps=0.1, eps_step=0.05, max_iter=2, verbose=False)
    >>> x, y = np.random.default_rng(0).random((16, 1, 8, 8), dtype=np.float32), np.arange(16) % 3
    >>> IBAdversarialTrainerTRADESPyTorch(clf, pgd, beta=1.0).fit(x, y, batch_size=8, nb_epochs=1)
    >>> clf.loss.num_ib_terms  # one IB term per training batch, none in the 4 attack steps
    2
    >>> clf.loss.num_calls
    6

The adapter is three modules, re-exported here: :mod:`~ib_plugins.adapters.art_loss` (the loss and the
ART version check), :mod:`~ib_plugins.adapters.art_classifier` (the classifier and its factories) and
:mod:`~ib_plugins.adapters.art_trainers` (the trainers).
"""

from __future__ import annotations

from ib_plugins.adapters.art_classifier import IBPyTorchClassifier, make_art_classifier, make_art_proxy_classifier
from ib_plugins.adapters.art_loss import (
    TESTED_ART_VERSION,
    CleanBatch,
    IBCrossEntropyLoss,
    UntestedARTVersionWarning,
    check_art_version,
    source_fingerprint,
)
from ib_plugins.adapters.art_trainers import (
    AdversarialTrainerMARTPyTorch,
    IBAdversarialTrainer,
    IBAdversarialTrainerAWPPyTorch,
    IBAdversarialTrainerFBFPyTorch,
    IBAdversarialTrainerMadryPGD,
    IBAdversarialTrainerMARTPyTorch,
    IBAdversarialTrainerOAATPyTorch,
    IBAdversarialTrainerTRADESPyTorch,
    IBTrainerMixin,
)

__all__ = [
    "TESTED_ART_VERSION",
    "UntestedARTVersionWarning",
    "check_art_version",
    "source_fingerprint",
    "CleanBatch",
    "IBCrossEntropyLoss",
    "IBPyTorchClassifier",
    "make_art_classifier",
    "make_art_proxy_classifier",
    "IBTrainerMixin",
    "IBAdversarialTrainer",
    "IBAdversarialTrainerMadryPGD",
    "IBAdversarialTrainerTRADESPyTorch",
    "IBAdversarialTrainerAWPPyTorch",
    "IBAdversarialTrainerFBFPyTorch",
    "IBAdversarialTrainerOAATPyTorch",
    "AdversarialTrainerMARTPyTorch",
    "IBAdversarialTrainerMARTPyTorch",
]

