"""The Variational Information Bottleneck: :class:`VIBHead`, :class:`VIBClassifier` and :func:`vib_loss`."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ib_plugins.baselines._checks import _check_generator, _check_int, _check_number
from ib_plugins.errors import NoTrainingForwardError

EvalMode = Literal["mean", "sample_average"]
"""How a :class:`VIBHead` classifies in eval mode: ``"mean"`` (z = μ) or ``"sample_average"``."""

_EVAL_MODES = ("mean", "sample_average")


def vib_kl(mu: Tensor, std: Tensor) -> Tensor:
    """Per-sample ``KL(N(μ, diag σ²) ‖ N(0, I)) = −½ Σ_k (1 + 2 log σ_k − μ_k² − σ_k²)`` in nats.

    It is 0 exactly when ``μ = 0`` and ``σ = 1``, and positive otherwise. Alemi et al.'s code divides
    by ln 2 (bits); that only rescales β and is not applied here. ``σ`` is clamped at the dtype's
    smallest normal number inside the log.

    Args:
        mu: means ``[..., K]``.
        std: standard deviations ``[..., K]`` (> 0).

    Returns:
        The KL per sample, ``[...]``.

    Raises:
        ValueError: the shapes differ.
        TypeError: an input is not a floating tensor.

    Example:
        >>> import torch
        >>> vib_kl(torch.zeros(2, 3), torch.ones(2, 3))
        tensor([0., 0.])
        >>> vib_kl(torch.tensor([[1.0]]), torch.tensor([[1.0]]))
        tensor([0.5000])
    """
    for name, t in (("mu", mu), ("std", std)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if mu.shape != std.shape:
        raise ValueError(f"std: expected the shape of mu {tuple(mu.shape)}, got {tuple(std.shape)}")
    log_std = torch.log(std.clamp_min(torch.finfo(std.dtype).tiny))
    return 0.5 * (mu * mu + std * std - 1.0 - 2.0 * log_std).sum(dim=-1)


class VIBHead(nn.Module):
    """The Variational Information Bottleneck head of Alemi et al. (2017), as in 1Konny/VIB-pytorch.

    ``encoder = Linear(in_features, 2K)``; ``μ`` = the first K outputs, ``σ = softplus(s − 5)`` from
    the last K; ``classifier = Linear(K, C)``.

    * **Training** forwards classify one reparameterised sample ``z = μ + σ·ε`` and store the batch
      mean of :func:`vib_kl` as :attr:`last_kl` (a tensor; no host sync). :meth:`regularizer` is
      ``β·last_kl``; the loss is ``CE + β·KL`` (:func:`vib_loss`). ``last_kl`` belongs to the latest
      training forward (an attack run in train mode overwrites it); it is not saved in
      ``state_dict`` and is dropped by ``copy.deepcopy``/pickling.
    * **Eval** forwards with ``eval_mode="mean"`` (default) return the logits of ``z = μ``: a
      deterministic classifier, the one to attack (spec A18). With ``eval_mode="sample_average"``
      they return ``log((1/S) Σ_s softmax(classifier(μ + σ·ε_s)))`` over ``S = num_samples_eval``
      samples (Alemi: S = 12): log-probabilities, valid as logits for CE. **This is stochastic**:
      AutoAttack's randomness check will flag it, and attacks need EOT (average gradients over
      draws) to be meaningful; report clean accuracy with both modes (spec §5).

    Noise comes from :attr:`generator` when one is set (on any device; the noise is moved to the
    activations' device), otherwise from torch's default generator.

    Args:
        in_features: size of the input feature vector.
        num_classes: number of classes C.
        k: size K of the code.
        beta: β, the weight of the KL term; ≥ 0 (Alemi: 1e-3).
        num_samples_eval: samples S averaged by ``eval_mode="sample_average"`` (must be 1 with
            ``"mean"``).
        eval_mode: ``"mean"`` or ``"sample_average"``.
        generator: optional ``torch.Generator`` for the noise (reproducible training).

    Raises:
        ValueError: an argument is out of range or unknown.
        TypeError: ``generator`` is not a ``torch.Generator``.

    Shape:
        - Input: ``[B, in_features]``.
        - Output: ``[B, num_classes]``.

    Example:
        >>> import torch
        >>> head = VIBHead(32, 10, k=8, generator=torch.Generator().manual_seed(0))
        >>> feats = torch.randn(4, 32)
        >>> head.train()(feats).shape, head.last_kl.shape
        (torch.Size([4, 10]), torch.Size([]))
        >>> reg = head.regularizer()
        >>> mu, _ = head.encode(feats)
        >>> torch.equal(head.eval()(feats), head.classifier(mu))
        True
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        *,
        k: int = 256,
        beta: float = 1e-3,
        num_samples_eval: int = 1,
        eval_mode: EvalMode = "mean",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features = _check_int("in_features", in_features, 1)
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.k = _check_int("k", k, 1)
        self.beta = _check_number("beta", beta)
        self.num_samples_eval = _check_int("num_samples_eval", num_samples_eval, 1)
        if eval_mode not in _EVAL_MODES:
            raise ValueError(f"eval_mode: expected one of {', '.join(map(repr, _EVAL_MODES))}, got {eval_mode!r}")
        if eval_mode == "mean" and num_samples_eval != 1:
            raise ValueError(
                f"num_samples_eval: only used with eval_mode='sample_average'; expected 1 with "
                f"eval_mode='mean', got {num_samples_eval}"
            )
        self.eval_mode: EvalMode = eval_mode
        self.generator = _check_generator(generator)
        self.encoder = nn.Linear(in_features, 2 * k)
        self.classifier = nn.Linear(k, num_classes)
        self.last_kl: Tensor | None = None

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The code's mean and standard deviation.

        Args:
            x: features ``[B, in_features]``.

        Returns:
            ``(μ, σ)``, each ``[B, K]``, with ``σ = softplus(s − 5) > 0``.

        Raises:
            ValueError: ``x`` has the wrong shape.

        Example:
            >>> import torch
            >>> mu, std = VIBHead(6, 3, k=2).encode(torch.rand(5, 6))
            >>> mu.shape, bool((std > 0).all())
            (torch.Size([5, 2]), True)
        """
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x: expected features of shape [batch, in_features={self.in_features}], got {shape}")
        stats = self.encoder(x)
        mu, s = stats[:, : self.k], stats[:, self.k :]
        return mu, F.softplus(s - 5.0)

    def _noise(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        if self.generator is None:
            return torch.randn(shape, device=like.device, dtype=like.dtype)
        g = self.generator
        return torch.randn(shape, generator=g, device=g.device, dtype=like.dtype).to(like.device)

    def forward(self, x: Tensor) -> Tensor:
        """Classify features (see the class docstring for training vs eval behaviour).

        Args:
            x: features ``[B, in_features]``.

        Returns:
            Logits ``[B, C]`` (log-probabilities with ``eval_mode="sample_average"`` in eval).

        Raises:
            ValueError: ``x`` has the wrong shape.

        Example:
            >>> import torch
            >>> head = VIBHead(6, 3, k=2, eval_mode="sample_average", num_samples_eval=12).eval()
            >>> out = head(torch.rand(5, 6))
            >>> torch.allclose(out.exp().sum(-1), torch.ones(5))
            True
        """
        mu, std = self.encode(x)
        if self.training:
            z = mu + std * self._noise(tuple(std.shape), std)
            self.last_kl = vib_kl(mu, std).mean()
            return self.classifier(z)
        if self.eval_mode == "mean":
            return self.classifier(mu)
        s = self.num_samples_eval
        z = mu.unsqueeze(0) + std.unsqueeze(0) * self._noise((s, *std.shape), std)
        log_probs = F.log_softmax(self.classifier(z), dim=-1)  # [S, B, C]
        return torch.logsumexp(log_probs, dim=0) - math.log(s)

    def regularizer(self) -> Tensor:
        """``β·KL`` of the latest training forward (a differentiable scalar).

        Returns:
            ``beta * last_kl``.

        Raises:
            NoTrainingForwardError: (a ``RuntimeError``) no training-mode forward has run.

        Example:
            >>> import torch
            >>> head = VIBHead(4, 2, k=2, beta=0.5)
            >>> _ = head.train()(torch.rand(3, 4))
            >>> bool(head.regularizer() == 0.5 * head.last_kl)
            True
        """
        if self.last_kl is None:
            raise NoTrainingForwardError(
                "VIBHead.regularizer() needs the KL of a training-mode forward, and none has run; call "
                ".train() and run a forward first (eval-mode forwards do not compute the KL)"
            )
        return self.beta * self.last_kl

    def config(self) -> dict[str, object]:
        """The configuration as a JSON-serialisable dict.

        Example:
            >>> VIBHead(8, 2).config()["k"]
            256
        """
        return {
            "method": "vib",
            "in_features": self.in_features,
            "num_classes": self.num_classes,
            "k": self.k,
            "beta": self.beta,
            "num_samples_eval": self.num_samples_eval,
            "eval_mode": self.eval_mode,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["last_kl"] = None  # a non-leaf tensor cannot be deep-copied or pickled
        return state

    def extra_repr(self) -> str:
        """The configuration shown by ``repr``."""
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, k={self.k}, beta={self.beta}, "
            f"eval_mode={self.eval_mode!r}, num_samples_eval={self.num_samples_eval}"
        )


class VIBClassifier(nn.Module):
    """``backbone → flatten → VIBHead``: a VIB classifier on any feature extractor.

    Recommended adaptation for CNNs (spec §5, A18): the backbone runs up to the penultimate
    representation and the head replaces the final linear layer. For IB-RAR's VGG-16 that is the
    4096-d output of ``fc2``, with K = 256 and β = 1e-3::

        vgg = VGG16(num_classes=10)
        vgg.classifier = nn.Identity()          # VGG16 now returns fc2's 4096-d output
        model = VIBClassifier(vgg, 4096, 10)    # k=256, beta=1e-3

    Train with :func:`vib_loss` under the comparison protocol (SGD 0.01, momentum 0.9,
    StepLR(20, 0.2), 60 epochs), attack the deterministic eval forward (z = μ) or use EOT.

    Args:
        backbone: module mapping inputs to features ``[B, ...]`` (flattened to ``[B, feature_dim]``).
        feature_dim: number of features per sample after flattening.
        num_classes: number of classes.
        **vib_kwargs: keyword arguments of :class:`VIBHead` (``k``, ``beta``, ``num_samples_eval``,
            ``eval_mode``, ``generator``).

    Raises:
        TypeError: ``backbone`` is not a module.
        ValueError: a bad head argument; at forward time, a backbone output of the wrong size.

    Example:
        >>> import torch, torch.nn as nn
        >>> backbone = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        >>> model = VIBClassifier(backbone, 16, 10, k=8)
        >>> x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
        >>> vib_loss(model.train()(x), y, model).backward()
        >>> model.eval()(x).shape
        torch.Size([5, 10])
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, **vib_kwargs: Any) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone: expected a torch.nn.Module, got {type(backbone).__name__}")
        self.backbone = backbone
        self.head = VIBHead(feature_dim, num_classes, **vib_kwargs)

    @property
    def last_kl(self) -> Tensor | None:
        """The head's batch-mean KL of the latest training forward (None before any)."""
        return self.head.last_kl

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the inputs (see :class:`VIBHead` for training vs eval behaviour).

        Args:
            x: inputs of the backbone.

        Returns:
            ``[B, num_classes]``.

        Raises:
            ValueError: the backbone's output does not have ``feature_dim`` features per sample.
            TypeError: the backbone does not return a tensor.

        Example:
            >>> import torch, torch.nn as nn
            >>> VIBClassifier(nn.Flatten(), 12, 3, k=4).eval()(torch.rand(2, 3, 4)).shape
            torch.Size([2, 3])
        """
        feats = self.backbone(x)
        if not isinstance(feats, Tensor):
            raise TypeError(f"backbone: expected it to return a tensor, got {type(feats).__name__}")
        if feats.dim() < 2:
            raise ValueError(f"backbone: expected an output of shape [batch, ...], got {tuple(feats.shape)}")
        feats = feats.flatten(1)
        if feats.shape[1] != self.head.in_features:
            raise ValueError(
                f"feature_dim: the backbone returns {feats.shape[1]} features per sample, but "
                f"feature_dim={self.head.in_features}"
            )
        return self.head(feats)

    def regularizer(self) -> Tensor:
        """``β·KL`` of the latest training forward (see :meth:`VIBHead.regularizer`).

        Raises:
            NoTrainingForwardError: no training-mode forward has run.

        Example:
            >>> import torch, torch.nn as nn
            >>> m = VIBClassifier(nn.Identity(), 4, 2, k=2)
            >>> _ = m.train()(torch.rand(3, 4))
            >>> m.regularizer().shape
            torch.Size([])
        """
        return self.head.regularizer()


def vib_loss(logits: Tensor, y: Tensor, model_or_head: nn.Module) -> Tensor:
    """``CE(logits, y) + β·KL``: the VIB training loss (nats; no ln 2 division).

    The KL is that of the latest training forward of every :class:`VIBHead` inside
    ``model_or_head`` (normally one), so ``logits`` should come from that forward.

    Args:
        logits: ``[B, C]`` from a training forward.
        y: class indices ``[B]``.
        model_or_head: a :class:`VIBHead`, a :class:`VIBClassifier`, or any module containing a head
            (e.g. an :class:`~ib_plugins.wrap.IBModel` around one).

    Returns:
        A differentiable scalar.

    Raises:
        TypeError: ``model_or_head`` is not a module or contains no :class:`VIBHead`.
        NoTrainingForwardError: no training-mode forward has run.

    Example:
        >>> import torch
        >>> head = VIBHead(4, 3, k=2, beta=0.0)
        >>> logits, y = head.train()(torch.rand(6, 4)), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> bool(vib_loss(logits, y, head) == torch.nn.functional.cross_entropy(logits, y))
        True
    """
    if not isinstance(model_or_head, nn.Module):
        raise TypeError(
            f"model_or_head: expected a VIBHead or a module containing one, got {type(model_or_head).__name__}"
        )
    heads = [m for m in model_or_head.modules() if isinstance(m, VIBHead)]
    if not heads:
        raise TypeError(
            f"model_or_head: expected a VIBHead or a module containing one, got a {type(model_or_head).__name__} "
            "without a VIBHead"
        )
    loss = F.cross_entropy(logits, y)
    for head in heads:
        loss = loss + head.regularizer()
    return loss
