"""HSIC estimators: the normalised "nHSIC" of IB-RAR / HBaR and a textbook biased HSIC.

Every function here is pure, works on any device and floating dtype, and batches over leading
dimensions. Inputs of any shape are flattened per sample (``reshape(m, -1)``).

The default :func:`nhsic` reproduces the authors' ``hsic_normalized_cca`` exactly (spec §1.1):

1. ``D_ij = |‖a_i‖² − 2⟨a_i, a_j⟩ + ‖a_j‖²|``;
2. Gaussian kernel ``K = exp(−D / (2 σ² d))`` with the bandwidth scaled by the feature dimension
   ``d`` (``bandwidth="scaled"``), or a linear kernel ``K = A Aᵀ``;
3. one-sided centring ``K̃ = K H`` with ``H = I − 11ᵀ/m`` (``center="right"``);
4. ``R = K̃ (K̃ + ε m I)⁻¹`` (computed with :func:`torch.linalg.solve`, never an explicit inverse);
5. ``nHSIC(A, B) = tr(R_A R_B)``.

Because ``R_X`` and ``R_Y`` depend only on the batch, a caller that regularises several layers
computes them once with :func:`nocco_operator` and reuses them through :func:`nhsic_from_operators`
(numerically identical to calling :func:`nhsic` per layer).

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(16, 3, 8, 8, generator=g)
    >>> t = torch.relu(torch.randn(16, 32, generator=g))
    >>> v = nhsic(t, x)
    >>> v.shape, bool(0 < v < 15)
    (torch.Size([]), True)
"""

from __future__ import annotations

import contextlib
import math
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Kernel",
    "Center",
    "Bandwidth",
    "flatten_samples",
    "pairwise_sq_dists",
    "gaussian_kernel",
    "linear_kernel",
    "kernel_matrix",
    "center_kernel",
    "centered_kernel",
    "nocco_operator",
    "hsic_operator",
    "nhsic_from_operators",
    "nhsic",
    "hsic",
]

Kernel = Literal["gaussian", "linear"]
Center = Literal["right", "both"]
Bandwidth = Literal["scaled", "median"]

_KERNELS = ("gaussian", "linear")
_CENTERS = ("right", "both")
_BANDWIDTHS = ("scaled", "median")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")


def _check_float_tensor(name: str, t: Tensor) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    if t.dim() == 0:
        raise ValueError(f"{name}: expected a batch [m, ...] with a sample dimension, got a 0-d tensor (a scalar)")


def _check_pair(a: Tensor, b: Tensor) -> None:
    """Both inputs are floating batches of the same samples on one device (metadata only, no host read)."""
    _check_float_tensor("a", a)
    _check_float_tensor("b", b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b must hold the same samples: got batch sizes {a.shape[0]} and {b.shape[0]}")
    if a.device != b.device:
        raise ValueError(f"b: expected a tensor on a's device ({a.device}), got {b.device}")


def _check_finite_flag(check_finite: object) -> None:
    if check_finite is not None and not isinstance(check_finite, bool):
        raise TypeError(f"check_finite: expected None, True or False, got {check_finite!r}")


def _raise_if_not_finite(
    value: Tensor, parts: tuple[tuple[str, Tensor, Tensor, str], ...], check_finite: bool | None
) -> None:
    """Name the input behind a NaN/inf value: one host read of the value, the rest only on failure.

    ``parts``: ``(name, input, its operator or centred kernel, its kernel)``. Runs on CPU tensors
    only unless ``check_finite`` is True (elsewhere it would stall the device).
    """
    check = check_finite if check_finite is not None else value.device.type == "cpu"
    if not check or bool(torch.isfinite(value).all()):
        return
    for name, t, _, _ in parts:
        if not bool(t.detach().isfinite().all()):
            raise ValueError(f"{name}: expected finite values, got NaN or inf")
    for name, t, op, kernel in parts:
        if kernel == "linear" and not bool(op.detach().isfinite().all()):
            raise ValueError(
                f"{name}: expected values whose linear kernel fits in {op.dtype}, got max |{name}| = "
                f"{float(t.detach().abs().max()):.3g}: the inner products overflow; rescale {name} or use "
                "the Gaussian kernel (scale-safe)"
            )
    raise FloatingPointError(  # pragma: no cover - finite inputs give finite values (tests/test_fuzz.py)
        "the HSIC value is NaN or inf although both inputs and their kernels are finite; check sigma and eps"
    )


def flatten_samples(t: Tensor) -> Tensor:
    """Flatten every sample of a batch to one row.

    Args:
        t: a tensor ``[m, ...]`` whose first dimension indexes samples.

    Returns:
        ``t.reshape(m, -1)``.

    Raises:
        ValueError: ``t`` has no batch dimension.

    Shape:
        ``[m, *] -> [m, d]`` with ``d`` the product of the trailing dimensions (1 for a vector).

    Example:
        >>> flatten_samples(torch.zeros(4, 3, 2, 2)).shape
        torch.Size([4, 12])
    """
    if t.dim() == 0:
        raise ValueError("t: expected a tensor with a batch dimension [m, ...], got a 0-d tensor (a scalar)")
    # math.prod, not -1: reshape(0, -1) is ambiguous for an empty batch.
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))


def pairwise_sq_dists(a: Tensor) -> Tensor:
    """Squared Euclidean distances between the rows of ``a``, as the authors compute them.

    ``D_ij = |‖a_i‖² − 2⟨a_i, a_j⟩ + ‖a_j‖²|`` (the absolute value guards against tiny negatives).

    Args:
        a: rows to compare, ``[..., m, d]``.

    Returns:
        The distance matrices, ``[..., m, m]``.

    Example:
        >>> pairwise_sq_dists(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[ 0., 25.],
                [25.,  0.]])
    """
    gram = a @ a.transpose(-1, -2)
    eye = torch.eye(a.shape[-2], dtype=torch.bool, device=a.device)
    # ‖a_i‖² from the Gram matrix (no extra pass over the features), read as a masked row sum:
    # torch.compile's inductor (torch 2.14) differentiates gram.diagonal() used next to gram wrongly
    # (1-25 % off in float64; tests/test_hot_path.py), and the masked sum costs only m² flops.
    sq = gram.masked_fill(~eye, 0.0).sum(-1)
    dists = (sq.unsqueeze(-1) - 2.0 * gram + sq.unsqueeze(-2)).abs()
    # The diagonal is exactly 0 in eager mode; pinned to 0 so that a compiler's recomputed ±1e-16
    # there cannot pick a sign for abs()'s gradient.
    return dists.masked_fill(eye, 0.0)


def _scaled_sq_dists(a: Tensor) -> tuple[Tensor, Tensor]:
    """Squared distances of the rows of ``a`` in units of a detached scale: ``D = c² · D(a / c)``.

    ``c = max |a|`` over each matrix ``[m, d]`` (shape ``[..., 1, 1]``; 1 where that is 0 or the
    matrix is empty). The raw formula squares the features, so it overflows to inf (then NaN) once
    ``‖a_i‖²`` exceeds the dtype's range (``|a| ≳ 1e19`` in float32, ``≳ 1e154`` in float64); the
    scaled rows lie in ``[−1, 1]``, so ``D(a / c)`` is finite for every finite input. ``c`` is a
    constant (detached), so the gradient is that of ``D`` itself; rounding is the same as for the
    raw formula (relative to the largest entry). NaN/inf inputs still give NaN. No host read.
    """
    if a.shape[-1] == 0 or a.shape[-2] == 0:  # zero-width samples are all equal: D = 0
        return pairwise_sq_dists(a), a.new_ones((*a.shape[:-2], 1, 1)).detach()
    c = a.detach().abs().amax(dim=(-2, -1), keepdim=True)
    c = torch.where(c > 0, c, torch.ones_like(c))  # 0 (and NaN, which then propagates) -> 1
    c = torch.exp2(torch.floor(torch.log2(c)))  # a power of 2: a / c and c² D_s are exact (no rounding)
    return pairwise_sq_dists(a / c), c


def _median_sq_scale(dists: Tensor) -> Tensor:
    """Median heuristic on (scaled) distances: the median off-diagonal entry, detached, ``[...]``."""
    m = dists.shape[-1]
    rows, cols = torch.tril_indices(m, m, offset=-1, device=dists.device)
    tri = dists.detach()[..., rows, cols]
    med = tri.median(dim=-1).values
    # Degenerate batches (all samples equal) fall back to the mean (then to the floor, see below).
    return torch.where(med > 0, med, tri.mean(dim=-1))


def _gaussian_exponent(a: Tensor, *, sigma: float, bandwidth: Bandwidth) -> Tensor:
    """``−D / v`` of the Gaussian kernel of the rows of ``a``, without overflow for finite inputs.

    ``D = c² D_s`` with ``c`` a power of 2 (see :func:`_scaled_sq_dists`), so ``D / v = D_s / (v / c²)``
    with every scaling exact: for inputs and bandwidths inside the dtype's range the result is
    bit-identical to the raw formula. Where ``v / c²`` leaves the range (huge or tiny features or
    σ), it is computed as ``(σ√(2d) / c)²`` and floored at the smallest normal number: every
    off-diagonal ``D / v`` is then far beyond the ~745 at which ``exp`` underflows to 0 anyway (or
    tiny, ``K = 1``), and the diagonal stays exactly 0 (never ``0 / 0``). For the median bandwidth
    ``σ² = max(median D, 1e-4)`` and ``c²`` cancels the same way. Zero-width samples (``d = 0``) are all
    equal: the exponent is 0 (``K = 1``, a constant, whose centred kernel is 0). No host read.
    """
    dists, c = _scaled_sq_dists(a)
    tiny = torch.finfo(dists.dtype).tiny
    c2 = c.square()
    if bandwidth == "scaled":
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma: expected a positive finite number, got {sigma!r}")
        d = a.shape[-1]
        if d == 0:
            return -dists
        v = (2.0 * sigma * sigma * d) / c2  # exact (c² is a power of 4) unless out of range
        in_range = (v > 0) & (v < math.inf)  # False for 0, inf and NaN
        v = torch.where(in_range, v, (sigma * math.sqrt(2.0 * d) / c).square()).clamp_min(tiny)
        return -(dists / v)
    # σ² = max(median D, 1e-4) in units of c²; sqrt and square as the raw formula, all exact scalings.
    floor = 1e-4 / c2  # inf for tiny c: then K = 1, as exp(−D / 2e-4) is for such tiny D
    s = torch.maximum(_median_sq_scale(dists)[..., None, None], floor).sqrt()
    return -dists / (2.0 * s * s).clamp_min(tiny)  # all samples equal at c² = inf: D = 0, not 0 / 0


def gaussian_kernel(
    a: Tensor, *, sigma: float = 5.0, bandwidth: Bandwidth = "scaled"
) -> Tensor:
    """Gaussian kernel matrix of the rows of ``a``.

    With ``bandwidth="scaled"`` (the authors' choice) ``K = exp(−D / (2 σ² d))``, so the effective
    bandwidth is ``σ·√d``. With ``bandwidth="median"`` σ is the square root of the median
    off-diagonal squared distance of the batch (a detached constant) and ``K = exp(−D / (2 σ²))``.
    The distances are computed in units of the batch's largest ``|a|`` (the same value; no
    overflow for any finite input). Zero-width rows (``d = 0``) give ``K = 1``.

    Args:
        a: rows, ``[..., m, d]``.
        sigma: the bandwidth for ``"scaled"`` (ignored for ``"median"``).
        bandwidth: ``"scaled"`` or ``"median"``.

    Returns:
        ``K``, ``[..., m, m]``, symmetric with a unit diagonal.

    Raises:
        ValueError: ``sigma`` is not positive or ``bandwidth`` is unknown.

    Example:
        >>> k = gaussian_kernel(torch.rand(5, 7))
        >>> torch.allclose(k.diagonal(), torch.ones(5))
        True
        >>> bool(gaussian_kernel(1e30 * torch.rand(5, 7)).isfinite().all())  # float32, no overflow
        True
    """
    _check_choice("bandwidth", bandwidth, _BANDWIDTHS)
    return torch.exp(_gaussian_exponent(a, sigma=sigma, bandwidth=bandwidth))


def linear_kernel(a: Tensor) -> Tensor:
    """Linear kernel ``K = A Aᵀ`` (no scaling, as the authors' code).

    Args:
        a: rows, ``[..., m, d]``.

    Returns:
        ``K``, ``[..., m, m]``.

    Example:
        >>> linear_kernel(torch.eye(2))
        tensor([[1., 0.],
                [0., 1.]])
    """
    return a @ a.transpose(-1, -2)


def kernel_matrix(
    a: Tensor,
    *,
    kernel: Kernel = "gaussian",
    sigma: float = 5.0,
    bandwidth: Bandwidth = "scaled",
) -> Tensor:
    """Kernel matrix of a batch, flattening each sample first.

    Args:
        a: a batch ``[m, ...]``.
        kernel: ``"gaussian"`` or ``"linear"``.
        sigma: Gaussian bandwidth (see :func:`gaussian_kernel`).
        bandwidth: ``"scaled"`` or ``"median"`` (Gaussian only).

    Returns:
        ``K``, ``[m, m]``.

    Raises:
        ValueError: unknown ``kernel`` or ``bandwidth``; fewer than 2 samples.

    Example:
        >>> kernel_matrix(torch.rand(4, 3, 2, 2)).shape
        torch.Size([4, 4])
    """
    _check_choice("kernel", kernel, _KERNELS)
    _check_float_tensor("a", a)
    flat = flatten_samples(a)
    if flat.shape[0] < 2:
        raise ValueError(f"HSIC needs a batch of at least 2 samples, got {flat.shape[0]}")
    if kernel == "linear":
        return linear_kernel(flat)
    return gaussian_kernel(flat, sigma=sigma, bandwidth=bandwidth)


def center_kernel(k: Tensor, *, center: Center = "right") -> Tensor:
    """Centre a kernel matrix: ``K H`` (``"right"``, the authors') or ``H K H`` (``"both"``).

    Args:
        k: kernel matrices ``[..., m, m]``.
        center: ``"right"`` for one-sided or ``"both"`` for the textbook two-sided centring.

    Returns:
        The centred matrices, same shape.

    Example:
        >>> kc = center_kernel(torch.rand(4, 4))
        >>> torch.allclose(kc.sum(-1), torch.zeros(4), atol=1e-6)
        True
    """
    _check_choice("center", center, _CENTERS)
    kh = k - k.mean(dim=-1, keepdim=True)
    if center == "right":
        return kh
    return kh - kh.mean(dim=-2, keepdim=True)


def nocco_operator(kc: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Regularised normalised operator ``R = K̃ (K̃ + ε m I)⁻¹`` of a centred kernel.

    Solved with :func:`torch.linalg.solve` (batched over leading dimensions), never inverted.

    Args:
        kc: centred kernel matrices ``[..., m, m]`` (see :func:`center_kernel`).
        eps: the regulariser ε (the authors use 1e-5; it matters, see spec §1.2).

    Returns:
        ``R``, ``[..., m, m]``.

    Raises:
        ValueError: ``eps`` is not positive.

    Example:
        >>> kc = center_kernel(kernel_matrix(torch.rand(6, 4)))
        >>> nocco_operator(kc).shape
        torch.Size([6, 6])
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps: expected a positive finite number, got {eps!r}")
    m = kc.shape[-1]
    if kc.is_floating_point() and not eps * m <= torch.finfo(kc.dtype).max:
        raise ValueError(
            f"eps: expected eps * m <= {torch.finfo(kc.dtype).max:.3g} (the largest {kc.dtype}), got eps={eps!r} "
            f"with m={m}: the regulariser eps*m*I would overflow"
        )
    eye = torch.eye(m, device=kc.device, dtype=kc.dtype)
    # X (K̃ + εmI) = K̃  <=>  X = K̃ (K̃ + εmI)⁻¹
    return torch.linalg.solve(kc + (eps * m) * eye, kc, left=False)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager[object]:
    # Devices without autocast (meta, some out-of-tree backends) have nothing to switch off.
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()


def _kernel_dtype(dtype: torch.dtype) -> torch.dtype:
    # Kernels, centring and solves never run in half precision (autocast included).
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def centered_kernel(
    a: Tensor,
    *,
    kernel: Kernel = "gaussian",
    sigma: float = 5.0,
    bandwidth: Bandwidth = "scaled",
    center: Center = "right",
) -> Tensor:
    """Centred kernel matrices of batches of rows, computed for accuracy in float32.

    Centring removes constants, so for a Gaussian kernel this centres ``expm1(−D/v) = K − 1``
    instead of ``K``: the same matrix in exact arithmetic, but without the cancellation of entries
    that all sit close to 1 (with the d-scaled bandwidth they do). In float32 this is about 100x more
    accurate than centring ``K``. Half-precision inputs are upcast to float32 and autocast is
    disabled inside.

    Args:
        a: rows ``[..., m, d]`` (use :func:`flatten_samples` first for a raw batch).
        kernel: ``"gaussian"`` or ``"linear"``.
        sigma: Gaussian bandwidth (see :func:`gaussian_kernel`).
        bandwidth: ``"scaled"`` or ``"median"``.
        center: ``"right"`` or ``"both"`` (see :func:`center_kernel`).

    Returns:
        ``K̃``, ``[..., m, m]``.

    Raises:
        ValueError: an option is unknown, ``sigma`` is not positive, or ``m < 2``.

    Example:
        >>> rows = torch.rand(6, 5)
        >>> ref = center_kernel(gaussian_kernel(rows))
        >>> torch.allclose(centered_kernel(rows), ref, atol=1e-6)
        True
    """
    _check_choice("kernel", kernel, _KERNELS)
    _check_choice("bandwidth", bandwidth, _BANDWIDTHS)
    _check_choice("center", center, _CENTERS)
    if a.dim() < 2 or a.shape[-2] < 2:
        got = a.shape[-2] if a.dim() >= 2 else a.numel()
        raise ValueError(f"HSIC needs a batch of at least 2 samples, got {got}")
    with _autocast_off(a.device.type):
        a = a.to(_kernel_dtype(a.dtype))
        if kernel == "linear":
            return center_kernel(linear_kernel(a), center=center)
        return center_kernel(torch.expm1(_gaussian_exponent(a, sigma=sigma, bandwidth=bandwidth)), center=center)


def hsic_operator(
    a: Tensor,
    *,
    kernel: Kernel = "gaussian",
    sigma: float = 5.0,
    eps: float = 1e-5,
    center: Center = "right",
    bandwidth: Bandwidth = "scaled",
) -> Tensor:
    """The operator ``R`` of one batch, for reuse across layers (``R_X``, ``R_Y``).

    ``nhsic(t, x) == nhsic_from_operators(hsic_operator(t), hsic_operator(x))``; computing
    ``R_X`` and ``R_Y`` once per batch saves one solve per hooked layer and term.

    Args:
        a: a batch ``[m, ...]``; each sample is flattened.
        kernel: ``"gaussian"`` or ``"linear"``.
        sigma: Gaussian bandwidth.
        eps: the regulariser ε.
        center: ``"right"`` or ``"both"``.
        bandwidth: ``"scaled"`` or ``"median"``.

    Returns:
        ``R``, ``[m, m]``.

    Raises:
        ValueError: fewer than 2 samples or an unknown option.
        TypeError: ``a`` is not a floating-point tensor.

    Example:
        >>> x, t = torch.rand(10, 12), torch.rand(10, 4)
        >>> r_x = hsic_operator(x)
        >>> torch.allclose(nhsic_from_operators(hsic_operator(t), r_x), nhsic(t, x))
        True
    """
    _check_float_tensor("a", a)
    kc = centered_kernel(flatten_samples(a), kernel=kernel, sigma=sigma, bandwidth=bandwidth, center=center)
    return nocco_operator(kc, eps=eps)


def nhsic_from_operators(r_a: Tensor, r_b: Tensor) -> Tensor:
    """``tr(R_A R_B)`` from precomputed operators (see :func:`nocco_operator`).

    Broadcasts over leading dimensions, so one ``R_X`` ``[m, m]`` can be scored against a stack of
    layer or channel operators ``[L, m, m]`` at once.

    Args:
        r_a: operators ``[..., m, m]``.
        r_b: operators ``[..., m, m]``.

    Returns:
        ``tr(R_A R_B)`` with the broadcast leading shape.

    Example:
        >>> r = nocco_operator(center_kernel(kernel_matrix(torch.rand(5, 3))))
        >>> torch.allclose(nhsic_from_operators(r, r), (r @ r).diagonal().sum())
        True
    """
    return (r_a * r_b.transpose(-1, -2)).sum(dim=(-2, -1))


def nhsic(
    a: Tensor,
    b: Tensor,
    *,
    kernel_a: Kernel = "gaussian",
    kernel_b: Kernel = "gaussian",
    sigma: float = 5.0,
    eps: float = 1e-5,
    center: Center = "right",
    bandwidth: Bandwidth = "scaled",
    check_finite: bool | None = None,
) -> Tensor:
    """Normalised HSIC ``tr(R_A R_B)`` of the authors' ``hsic_normalized_cca`` (spec §1.1).

    The value lies in ``[0, m − 1]``; it is symmetric in ``(a, b)`` when each keeps its kernel.

    Gaussian kernels are computed from distances in units of each batch's largest ``|value|`` (see
    :func:`gaussian_kernel`), so every finite input gives a finite value: features of 1e30 in float32
    or 1e300 in float64 do not overflow. A batch of zero-width samples (``d = 0``, e.g. ``a[:, :0]``)
    is a constant: its centred kernel is 0, so ``R = 0`` and the value is exactly 0, as for any
    constant feature.

    Args:
        a: first batch ``[m, ...]`` (e.g. a layer's activations T).
        b: second batch ``[m, ...]`` (e.g. the inputs X, or one-hot labels Y).
        kernel_a: kernel on ``a``: ``"gaussian"`` (default) or ``"linear"``.
        kernel_b: kernel on ``b``.
        sigma: Gaussian bandwidth, scaled by the feature dimension (default 5, as the authors).
        eps: the regulariser ε of ``(K̃ + ε m I)⁻¹``.
        center: ``"right"`` (``K H``, the authors') or ``"both"`` (``H K H``).
        bandwidth: ``"scaled"`` (the authors') or ``"median"``.
        check_finite: raise, naming the input, when the value is NaN/inf (an input holds NaN/inf,
            or a linear kernel overflows); None = on CPU tensors only (free there; elsewhere it is a
            host read), True = everywhere, False = never (NaN/inf then propagate).

    Returns:
        A scalar tensor on the inputs' device, in their (promoted) dtype, differentiable in both.

    Raises:
        ValueError: the batch sizes or devices differ, a batch has fewer than 2 samples or is a 0-d
            tensor, an option is unknown, ``eps * m`` overflows the dtype, or (see
            ``check_finite``) an input holds NaN/inf or a linear kernel of it overflows.
        TypeError: an input is not a floating-point tensor, or ``check_finite`` is not a bool/None.

    Shape:
        ``a: [m, *]``, ``b: [m, *]`` -> scalar.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> y = torch.nn.functional.one_hot(torch.arange(20) % 10, 10).float()
        >>> t = torch.rand(20, 16, generator=g)
        >>> v = nhsic(t, y, kernel_b="linear")
        >>> bool(0 < v <= 9.01)
        True
        >>> float(nhsic(t[:, :0], y))  # zero-width features carry no information
        0.0
    """
    _check_pair(a, b)
    _check_finite_flag(check_finite)
    opts = {"sigma": sigma, "eps": eps, "center": center, "bandwidth": bandwidth}
    ra = hsic_operator(a, kernel=kernel_a, **opts)
    rb = hsic_operator(b, kernel=kernel_b, **opts)
    dtype = torch.promote_types(ra.dtype, rb.dtype)
    value = nhsic_from_operators(ra.to(dtype), rb.to(dtype))
    _raise_if_not_finite(value, (("a", a, ra, kernel_a), ("b", b, rb, kernel_b)), check_finite)
    return value


def hsic(
    a: Tensor,
    b: Tensor,
    *,
    kernel_a: Kernel = "gaussian",
    kernel_b: Kernel = "gaussian",
    sigma: float = 5.0,
    bandwidth: Bandwidth = "median",
    check_finite: bool | None = None,
) -> Tensor:
    """Textbook biased HSIC estimator ``tr(K_A H K_B H) / (m − 1)²`` (Gretton et al., 2005).

    Unlike :func:`nhsic` it is not normalised, and its default bandwidth is the median heuristic.

    Args:
        a: first batch ``[m, ...]``.
        b: second batch ``[m, ...]``.
        kernel_a: kernel on ``a``.
        kernel_b: kernel on ``b``.
        sigma: Gaussian bandwidth when ``bandwidth="scaled"``.
        bandwidth: ``"median"`` (default) or ``"scaled"``.
        check_finite: as in :func:`nhsic`.

    Returns:
        A non-negative scalar tensor (0 for zero-width or constant samples).

    Raises:
        ValueError: the batch sizes or devices differ or are below 2, a 0-d input, an unknown
            option, or (see ``check_finite``) an input holding NaN/inf.
        TypeError: an input is not a floating-point tensor, or ``check_finite`` is not a bool/None.

    Example:
        >>> x = torch.rand(32, 4, generator=torch.Generator().manual_seed(1))
        >>> bool(hsic(x, x) > hsic(x, torch.rand(32, 4, generator=torch.Generator().manual_seed(2))))
        True
    """
    _check_pair(a, b)
    _check_finite_flag(check_finite)
    opts = {"sigma": sigma, "bandwidth": bandwidth, "center": "right"}
    kah = centered_kernel(flatten_samples(a), kernel=kernel_a, **opts)
    kbh = centered_kernel(flatten_samples(b), kernel=kernel_b, **opts)
    m = kah.shape[-1]
    dtype = torch.promote_types(kah.dtype, kbh.dtype)
    value = nhsic_from_operators(kah.to(dtype), kbh.to(dtype)) / float((m - 1) ** 2)
    _raise_if_not_finite(value, (("a", a, kah, kernel_a), ("b", b, kbh, kernel_b)), check_finite)
    return value
