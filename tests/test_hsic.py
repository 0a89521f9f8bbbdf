"""Tests of ib_plugins.hsic against a float64 numpy transcription of spec §1.1, plus the §1.2 oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ib_plugins.hsic import (
    center_kernel,
    centered_kernel,
    gaussian_kernel,
    hsic,
    hsic_operator,
    kernel_matrix,
    nhsic,
    nhsic_from_operators,
    nocco_operator,
    pairwise_sq_dists,
)

# --------------------------------------------------------------------------------------------
# numpy reference, written from spec §1.1 (not from the library)
# --------------------------------------------------------------------------------------------


def _np_operator(a: np.ndarray, kernel: str, *, sigma: float = 5.0, eps: float = 1e-5) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    a = a.reshape(a.shape[0], -1)
    m, d = a.shape
    if kernel == "gaussian":
        sq = (a * a).sum(axis=1)
        dists = np.abs(sq[:, None] - 2.0 * (a @ a.T) + sq[None, :])  # |‖a‖² − 2⟨a,b⟩ + ‖b‖²|
        k = np.exp(-dists / (2.0 * sigma**2 * d))  # exp(−D / (2 σ² d))
    elif kernel == "linear":
        k = a @ a.T
    else:  # pragma: no cover - test misuse
        raise AssertionError(kernel)
    h = np.eye(m) - np.ones((m, m)) / m
    kc = k @ h  # one-sided centring K H
    return kc @ np.linalg.inv(kc + eps * m * np.eye(m))  # R = K̃ (K̃ + ε m I)⁻¹


def np_nhsic(a: np.ndarray, b: np.ndarray, *, kernel_a: str = "gaussian", kernel_b: str = "gaussian") -> float:
    return float(np.trace(_np_operator(a, kernel_a) @ _np_operator(b, kernel_b)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def _rand_pair(shape_a, shape_b, *, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(shape_a, generator=g, dtype=torch.float64)
    b = torch.relu(torch.randn(shape_b, generator=g, dtype=torch.float64))
    return a.to(dtype), b.to(dtype)


SHAPES = [
    pytest.param((100, 3, 32, 32), (100, 512), id="conv-vs-vector-100"),
    pytest.param((64, 4096), (64, 3072), id="vector-64x4096-vs-3072"),
    pytest.param((20, 7), (20, 3, 2), id="small-20x7-vs-3x2"),
    pytest.param((16, 4, 3, 3), (16, 4, 3, 3), id="conv-vs-conv-16"),
    pytest.param((32, 96), (32, 8, 2, 2), id="vector-vs-conv-32"),
]
REALISTIC_SHAPES = [
    pytest.param((100, 3, 32, 32), (100, 512), id="conv-vs-vector-100"),
    pytest.param((64, 4096), (64, 3072), id="vector-64x4096-vs-3072"),
    pytest.param((64, 16, 2, 2), (64, 128), id="conv64-vs-vector128"),
]


# --------------------------------------------------------------------------------------------
# agreement with the reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_b", ["gaussian", "linear"])
@pytest.mark.parametrize(("shape_a", "shape_b"), SHAPES)
def test_nhsic_float64_matches_numpy_reference(shape_a, shape_b, kernel_b):
    a, b = _rand_pair(shape_a, shape_b, seed=1)
    expected = np_nhsic(_np(a), _np(b), kernel_b=kernel_b)
    got = nhsic(a, b, kernel_b=kernel_b)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("seed", [2, 3])
@pytest.mark.parametrize(("shape_a", "shape_b"), REALISTIC_SHAPES)
def test_nhsic_float32_matches_numpy_reference_on_realistic_shapes(shape_a, shape_b, seed):
    # The authors' configuration (Gaussian kernels on T and X) in float32, against float64 maths.
    a, b = _rand_pair(shape_a, shape_b, seed=seed, dtype=torch.float32)
    expected = np_nhsic(_np(a), _np(b))  # float64 reference of the same float32 data
    got = nhsic(a, b)
    assert got.dtype == torch.float32
    assert float(got) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(("shape_a", "shape_b"), REALISTIC_SHAPES)
def test_nhsic_float32_linear_kernel_on_realistic_shapes(shape_a, shape_b):
    # A linear kernel on wide non-negative features has cond(K̃ + εmI) ≈ λ_max / (εm) ~ 1e7, so
    # float32 reaches ~1e-3 relative, not 1e-4 (float64 inputs meet 1e-4, see above).
    a, b = _rand_pair(shape_a, shape_b, seed=2, dtype=torch.float32)
    expected = np_nhsic(_np(a), _np(b), kernel_b="linear")
    assert float(nhsic(a, b, kernel_b="linear")) == pytest.approx(expected, rel=1e-3)


def test_nhsic_linear_kernel_on_first_argument_matches_reference():
    a, b = _rand_pair((24, 10), (24, 5), seed=3)
    expected = np_nhsic(_np(a), _np(b), kernel_a="linear", kernel_b="gaussian")
    assert float(nhsic(a, b, kernel_a="linear")) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_nhsic_float32_one_hot_labels_matches_reference(seed):
    # Y = one-hot (d = 10): in float32 the Y operator's null space picks up rounding (cond ~ 1e4),
    # so the accepted error is 1e-3 relative; float64 meets 1e-8.
    g = torch.Generator().manual_seed(seed)
    t = torch.relu(torch.randn(100, 256, generator=g))
    y = F.one_hot(torch.randint(0, 10, (100,), generator=g), 10).float()
    for kernel_b in ("linear", "gaussian"):
        expected = np_nhsic(_np(t), _np(y), kernel_b=kernel_b)
        assert float(nhsic(t, y, kernel_b=kernel_b)) == pytest.approx(expected, rel=1e-3)
        got64 = nhsic(t.double(), y.double(), kernel_b=kernel_b)
        assert float(got64) == pytest.approx(expected, rel=1e-8)


def test_hsic_operator_reuse_equals_direct_nhsic():
    a, b = _rand_pair((30, 3, 4, 4), (30, 20), seed=5)
    for kb in ("gaussian", "linear"):
        direct = nhsic(a, b, kernel_b=kb)
        reused = nhsic_from_operators(hsic_operator(a), hsic_operator(b, kernel=kb))
        assert torch.allclose(direct, reused, rtol=1e-12, atol=0)


def test_nhsic_from_operators_broadcasts_over_a_stack():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(12, 9, generator=g, dtype=torch.float64)
    ts = [torch.rand(12, d, generator=g, dtype=torch.float64) for d in (3, 5, 7)]
    r_x = hsic_operator(x)
    stacked = nhsic_from_operators(torch.stack([hsic_operator(t) for t in ts]), r_x)
    assert stacked.shape == (3,)
    for i, t in enumerate(ts):
        assert float(stacked[i]) == pytest.approx(float(nhsic(t, x)), rel=1e-10)


def test_nocco_operator_matches_explicit_inverse():
    g = torch.Generator().manual_seed(7)
    kc = center_kernel(kernel_matrix(torch.rand(10, 6, generator=g, dtype=torch.float64)))
    m = kc.shape[0]
    expected = kc @ torch.linalg.inv(kc + 1e-5 * m * torch.eye(m, dtype=torch.float64))
    assert torch.allclose(nocco_operator(kc), expected, rtol=1e-8, atol=1e-10)


def test_centered_kernel_equals_centering_of_the_gaussian_kernel():
    g = torch.Generator().manual_seed(8)
    rows = torch.rand(9, 5, generator=g, dtype=torch.float64)
    for center in ("right", "both"):
        ref = center_kernel(gaussian_kernel(rows), center=center)
        assert torch.allclose(centered_kernel(rows, center=center), ref, atol=1e-12)


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_b", ["gaussian", "linear"])
def test_nhsic_gradcheck_float64_both_arguments(kernel_b):
    g = torch.Generator().manual_seed(9)
    a = torch.rand(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(6, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: nhsic(p, q, kernel_b=kernel_b), (a, b))


def test_hsic_gradcheck_float64_both_arguments():
    g = torch.Generator().manual_seed(10)
    a = torch.rand(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.rand(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p, q: hsic(p, q, bandwidth="scaled"), (a, b))
    assert torch.autograd.gradcheck(lambda p, q: hsic(p, q, kernel_b="linear", bandwidth="scaled"), (a, b))


# --------------------------------------------------------------------------------------------
# value-range oracles of spec §1.2 (m = 100, C = 10)
# --------------------------------------------------------------------------------------------

M, C = 100, 10


@pytest.fixture
def oracle_data():
    g = torch.Generator().manual_seed(11)
    y = torch.arange(M) % C
    y1h = F.one_hot(y, C).to(torch.float64)
    t_random = torch.relu(torch.randn(M, 512, generator=g, dtype=torch.float64))
    w = torch.randn(C, 512, generator=g, dtype=torch.float64)
    t_aligned = torch.relu(3.0 * y1h @ w + 0.1 * torch.randn(M, 512, generator=g, dtype=torch.float64))
    x = torch.rand(M, 3072, generator=g, dtype=torch.float64)
    return {"y": y1h, "t_random": t_random, "t_aligned": t_aligned, "x": x}


def test_oracle_random_relu_features_vs_one_hot_labels(oracle_data):
    d = oracle_data
    v_lin = float(nhsic(d["t_random"], d["y"], kernel_b="linear"))
    v_gau = float(nhsic(d["t_random"], d["y"], kernel_b="gaussian"))
    assert 7.5 <= v_lin <= 9.0  # spec: ≈ 8.2
    assert 7.0 <= v_gau <= 9.0  # spec: ≈ 8.0
    assert v_lin <= C - 1 + 1e-6  # bounded by rank(R_Y) ≈ C − 1


def test_oracle_label_aligned_features_carry_more_label_information(oracle_data):
    d = oracle_data
    aligned = float(nhsic(d["t_aligned"], d["y"], kernel_b="linear"))
    random = float(nhsic(d["t_random"], d["y"], kernel_b="linear"))
    assert 8.7 <= aligned <= C - 1 + 1e-6  # spec: ≈ 9.0
    assert aligned > random


def test_oracle_features_vs_cifar_like_inputs(oracle_data):
    d = oracle_data
    v = float(nhsic(d["t_random"], d["x"]))
    assert 50.0 <= v <= 90.0  # spec: ≈ 69
    assert v <= M - 1
    assert float(nhsic(d["t_aligned"], d["x"])) < v  # spec: ≈ 26 for label-aligned T


def test_nhsic_is_bounded_by_m_minus_one_and_nonnegative():
    g = torch.Generator().manual_seed(12)
    for m in (2, 5, 40):
        a = torch.randn(m, 30, generator=g, dtype=torch.float64)
        for b in (a, 3.0 * a, torch.randn(m, 8, generator=g, dtype=torch.float64)):
            v = float(nhsic(a, b))
            assert -1e-9 <= v <= m - 1 + 1e-6


# --------------------------------------------------------------------------------------------
# properties and options
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ka", "kb"), [("gaussian", "gaussian"), ("gaussian", "linear"), ("linear", "linear")])
def test_nhsic_symmetric_when_each_argument_keeps_its_kernel(ka, kb):
    a, b = _rand_pair((25, 3, 2, 2), (25, 6), seed=13)
    ab = nhsic(a, b, kernel_a=ka, kernel_b=kb)
    ba = nhsic(b, a, kernel_a=kb, kernel_b=ka)
    assert torch.allclose(ab, ba, rtol=1e-10, atol=0)


def test_center_both_runs_and_gives_the_same_nhsic_as_right_centering():
    # tr(R_A R_B) does not depend on the centring side: in the basis (1/√m, 1⊥), K H and H K H
    # differ only in a first row that the trace of the product never reaches. The kernels differ.
    a, b = _rand_pair((20, 7), (20, 3), seed=14)
    right = nhsic(a, b)
    both = nhsic(a, b, center="both")
    assert torch.isfinite(both)
    assert float(both) == pytest.approx(float(right), rel=1e-8)
    k = kernel_matrix(a)
    kr, kb_ = center_kernel(k, center="right"), center_kernel(k, center="both")
    assert not torch.allclose(kr, kb_)
    assert torch.allclose(kb_, kb_.T, atol=1e-12)  # H K H is symmetric, K H is not
    assert torch.allclose(kb_.sum(0), torch.zeros(20, dtype=torch.float64), atol=1e-12)


def test_median_bandwidth_runs_and_differs_from_default():
    a, b = _rand_pair((20, 7), (20, 3), seed=15)
    default = float(nhsic(a, b))
    median = float(nhsic(a, b, bandwidth="median"))
    assert np.isfinite(median) and 0 <= median <= 19 + 1e-6
    assert abs(median - default) > 1e-3 * default


def test_hsic_nonnegative_and_larger_for_dependent_data():
    g = torch.Generator().manual_seed(16)
    x = torch.rand(64, 5, generator=g)
    dependent = hsic(x, x**2 + 0.01 * torch.randn(64, 5, generator=g))
    independent = hsic(x, torch.rand(64, 5, generator=g))
    assert float(independent) >= 0.0
    assert float(dependent) > 2.0 * float(independent)
    assert float(hsic(x, x, kernel_a="linear", kernel_b="linear")) >= 0.0


def test_hsic_matches_textbook_formula():
    g = torch.Generator().manual_seed(17)
    a = torch.rand(15, 4, generator=g, dtype=torch.float64)
    b = torch.rand(15, 3, generator=g, dtype=torch.float64)
    m = 15
    h = torch.eye(m, dtype=torch.float64) - 1.0 / m
    ka = gaussian_kernel(a, bandwidth="scaled")
    kb = gaussian_kernel(b, bandwidth="scaled")
    expected = torch.trace(ka @ h @ kb @ h) / (m - 1) ** 2
    assert torch.allclose(hsic(a, b, bandwidth="scaled"), expected, rtol=1e-9)


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [nhsic, hsic], ids=["nhsic", "hsic"])
def test_batch_of_one_raises(fn):
    with pytest.raises(ValueError, match="at least 2"):
        fn(torch.rand(1, 4), torch.rand(1, 3))


def test_hsic_operator_batch_of_one_raises():
    with pytest.raises(ValueError, match="at least 2"):
        hsic_operator(torch.rand(1, 5))


@pytest.mark.parametrize("fn", [nhsic, hsic], ids=["nhsic", "hsic"])
def test_mismatched_batch_sizes_raise(fn):
    with pytest.raises(ValueError, match=r"batch sizes 5 and 6"):
        fn(torch.rand(5, 4), torch.rand(6, 4))


@pytest.mark.parametrize("fn", [nhsic, hsic], ids=["nhsic", "hsic"])
def test_non_float_inputs_raise_type_error(fn):
    with pytest.raises(TypeError, match="floating-point"):
        fn(torch.arange(8).reshape(4, 2), torch.rand(4, 3))
    with pytest.raises(TypeError, match="b: expected a floating-point"):
        fn(torch.rand(4, 3), torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(np.ones((4, 3)), torch.rand(4, 3))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernel_a": "rbf"}, "kernel"),
        ({"kernel_b": "poly"}, "kernel"),
        ({"center": "left"}, "center"),
        ({"bandwidth": "silverman"}, "bandwidth"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": -1.0}, "sigma"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_bad_options_raise_value_error_naming_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        nhsic(torch.rand(5, 3), torch.rand(5, 2), **kwargs)


# --------------------------------------------------------------------------------------------
# issue 11, item 4: no NaN from finite inputs
# --------------------------------------------------------------------------------------------


def _np_raw_kernel_scaled(a: np.ndarray, scale: float, *, sigma: float = 5.0) -> np.ndarray:
    """exp(−D(scale·a) / (2σ²d)) written in log space, so the reference itself cannot overflow."""
    a = a.reshape(a.shape[0], -1)
    d = a.shape[1]
    dist = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    log_fac = 2 * np.log(scale) - 2 * np.log(sigma) - np.log(2.0 * d)
    with np.errstate(divide="ignore", over="ignore"):
        expo = np.where(dist > 0, np.exp(np.log(np.where(dist > 0, dist, 1.0)) + log_fac), 0.0)
    return np.exp(-expo)


def _np_nhsic_scaled(a, scale_a, b) -> float:
    def op(k):
        m = k.shape[0]
        kc = k @ (np.eye(m) - np.ones((m, m)) / m)
        return kc @ np.linalg.inv(kc + 1e-5 * m * np.eye(m))

    return float(np.trace(op(_np_raw_kernel_scaled(a, scale_a)) @ op(_np_raw_kernel_scaled(b, 1.0))))


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [(torch.float32, 1e20), (torch.float32, 1e30), (torch.float32, 1e-30),
     (torch.float64, 1e154), (torch.float64, 1e200), (torch.float64, 1e300), (torch.float64, 1e-300)],
)
def test_huge_and_tiny_features_give_the_finite_value_of_the_formula(dtype, scale):
    """The raw ‖a‖² − 2⟨a,b⟩ + ‖b‖² overflowed (1e20 in float32, 1e154 in float64) into NaN."""
    a, b = _rand_pair((16, 3, 2, 2), (16, 6), seed=30)
    x = (a * scale).to(dtype)
    got = nhsic(x, b.to(dtype))
    expected = _np_nhsic_scaled(_np(x) / scale, scale, _np(b.to(dtype)))
    assert torch.isfinite(got)
    assert float(got) == pytest.approx(expected, rel=1e-3 if dtype == torch.float32 else 1e-8, abs=1e-6)
    # the median bandwidth is scale-free (above its 1e-4 floor): the value of the unscaled batch;
    # below the floor the samples are all but equal (K = 1) and HSIC is 0
    want = float(hsic(a.to(dtype), b.to(dtype))) if scale >= 1 else 0.0
    assert float(hsic(x, b.to(dtype))) == pytest.approx(want, rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("scale", [1e20, 1e154, 1e300])
def test_gradients_stay_finite_and_correct_at_huge_scales(scale):
    a, b = _rand_pair((10, 4), (10, 3), seed=31)
    x = (a * scale).requires_grad_()
    (grad,) = torch.autograd.grad(nhsic(x, b), x)
    assert torch.isfinite(grad).all()
    # at these scales every off-diagonal kernel entry is 0 (K = I): the value is flat in x
    assert float(grad.abs().max()) == 0.0
    # and on ordinary inputs the gradient is the formula's (finite differences)
    a.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: nhsic(t, b), (a,))


def test_scaled_distances_are_bit_identical_to_the_authors_formula_on_ordinary_inputs():
    """Dividing by a power of two before squaring changes no bit of the kernels in range."""
    g = torch.Generator().manual_seed(32)
    for dtype in (torch.float32, torch.float64):
        for bandwidth in ("scaled", "median"):
            a = (torch.randn(20, 37, generator=g, dtype=torch.float64) * 3).to(dtype)
            dists = pairwise_sq_dists(a)  # |‖a_i‖² − 2⟨a_i, a_j⟩ + ‖a_j‖²| on the raw values
            if bandwidth == "scaled":
                raw = torch.expm1(-dists / (2.0 * 5.0 * 5.0 * a.shape[1]))
            else:
                rows, cols = torch.tril_indices(20, 20, offset=-1)
                med = dists[rows, cols].median()
                s = med.clamp_min(1e-4).sqrt()
                raw = torch.expm1(-dists / (2.0 * s * s))
            raw = raw - raw.mean(dim=-1, keepdim=True)
            assert torch.equal(centered_kernel(a, bandwidth=bandwidth), raw), (dtype, bandwidth)


@pytest.mark.parametrize("fn", [nhsic, hsic])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_zero_width_features_have_zero_dependence(fn, dtype):
    """A zero-width sample is a constant: K = 1, centred K = 0, R = 0, so the value is exactly 0."""
    a, b = _rand_pair((12, 5), (12, 4), seed=33, dtype=dtype)
    assert float(fn(a[:, :0], b)) == 0.0
    assert float(fn(b, a[:, :0])) == 0.0
    assert float(fn(a.reshape(12, 5, 1)[:, :, :0], b)) == 0.0


@pytest.mark.parametrize("fn", [nhsic, hsic])
def test_scalars_raise_value_error_naming_the_argument(fn):
    with pytest.raises(ValueError, match=r"^a: expected a batch \[m, ...\] with a sample dimension, got a 0-d tensor"):
        fn(torch.tensor(1.0), torch.tensor(2.0))
    with pytest.raises(ValueError, match=r"^b: expected a batch"):
        fn(torch.rand(4, 2), torch.tensor(2.0))


@pytest.mark.parametrize("fn", [nhsic, hsic])
def test_non_finite_inputs_are_named_on_cpu(fn):
    a, b = torch.rand(8, 3), torch.rand(8, 2)
    bad = a.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^a: expected finite values, got NaN or inf"):
        fn(bad, b)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match=r"^b: expected finite values, got NaN or inf"):
        fn(b, bad)
    assert torch.isnan(fn(bad, b, check_finite=False))  # opt-out: NaN/inf propagate


def test_empty_batch_and_devices_are_named():
    with pytest.raises(ValueError, match="at least 2 samples, got 0"):
        nhsic(torch.rand(0, 3, 2), torch.rand(0, 4))
    with pytest.raises(ValueError, match=r"^b: expected a tensor on a's device \(cpu\), got meta"):
        nhsic(torch.rand(4, 3), torch.empty(4, 3, device="meta"))
    with pytest.raises(ValueError, match=r"^eps: expected eps \* m <= "):
        nhsic(torch.rand(4, 3), torch.rand(4, 3), eps=1e308)


# --------------------------------------------------------------------------------------------
# dtype, device, autocast
# --------------------------------------------------------------------------------------------


def test_float64_in_float64_out_and_promotion():
    g = torch.Generator().manual_seed(18)
    a64 = torch.rand(10, 4, generator=g, dtype=torch.float64)
    b64 = torch.rand(10, 3, generator=g, dtype=torch.float64)
    assert nhsic(a64, b64).dtype == torch.float64
    assert hsic(a64, b64).dtype == torch.float64
    assert nhsic(a64.float(), b64.float()).dtype == torch.float32
    assert nhsic(a64, b64.float()).dtype == torch.float64  # promoted
    assert nhsic(a64, b64).device == a64.device


def test_autocast_bfloat16_returns_float32_matching_float32_value():
    g = torch.Generator().manual_seed(19)
    a = torch.rand(64, 256, generator=g).bfloat16()
    b = torch.relu(torch.randn(64, 128, generator=g)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = nhsic(a, b)
        v_lin = nhsic(a, b, kernel_b="linear")
    assert v.dtype == torch.float32
    assert v_lin.dtype == torch.float32
    ref = nhsic(a.float(), b.float())
    ref_lin = nhsic(a.float(), b.float(), kernel_b="linear")
    assert float(v) == pytest.approx(float(ref), rel=1e-3)
    assert float(v_lin) == pytest.approx(float(ref_lin), rel=1e-3)


def test_autocast_with_float32_inputs_is_unchanged():
    g = torch.Generator().manual_seed(20)
    a, b = torch.rand(32, 100, generator=g), torch.rand(32, 80, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = nhsic(a, b)
    assert v.dtype == torch.float32
    assert float(v) == pytest.approx(float(nhsic(a, b)), rel=1e-5)


def test_nhsic_does_not_touch_the_global_rng():
    before = torch.get_rng_state()
    nhsic(torch.ones(4, 2).cumsum(0), torch.ones(4, 3).cumsum(0))
    assert torch.equal(before, torch.get_rng_state())


@pytest.mark.gpu
def test_nhsic_on_cuda_matches_cpu():
    a, b = _rand_pair((64, 3, 8, 8), (64, 128), seed=21, dtype=torch.float32)
    cpu = nhsic(a, b)
    gpu = nhsic(a.cuda(), b.cuda())
    assert gpu.device.type == "cuda"
    assert float(gpu) == pytest.approx(float(cpu), rel=1e-4)
