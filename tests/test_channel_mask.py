"""Tests of ib_plugins.channel_mask: selection vs a per-channel loop, schedule, and the mask in a model."""

from __future__ import annotations

import io
import math
import time

import pytest
import torch
import torch.nn.functional as F
from _models import ConvNet, count_hooks

from ib_plugins import ChannelMask, nhsic, select_channels, wrap_model
from ib_plugins.channel_mask import channel_scores

# --------------------------------------------------------------------------------------------
# a straightforward per-channel reference (spec §2.4 pseudo-code)
# --------------------------------------------------------------------------------------------


def loop_scores(features: torch.Tensor, x: torch.Tensor | None, y: torch.Tensor, num_classes: int, *,
                sigma: float = 5.0):
    m, c = features.shape[:2]
    y1h = F.one_hot(y, num_classes).to(features.dtype)
    x_flat = None if x is None else x.reshape(m, -1)
    ix, iy = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for ch in range(c):
        f_c = features[:, ch].reshape(m, -1)
        if x_flat is not None:
            ix[ch] = float(nhsic(x_flat, f_c, kernel_a="gaussian", kernel_b="gaussian", sigma=sigma))
        iy[ch] = float(nhsic(f_c, y1h, kernel_a="gaussian", kernel_b="gaussian", sigma=sigma))
    return ix, iy


def loop_keep_code(ix, iy, k_low_y, k_high_x):
    keep = torch.ones(iy.shape[0], dtype=torch.bool)
    keep[torch.argsort(iy)[:k_low_y]] = False
    if k_high_x:
        keep[torch.argsort(ix)[-k_high_x:]] = False
    return keep


def _data(m=64, c=48, spatial=(2, 2), num_classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = torch.relu(torch.randn(m, c, *spatial, generator=g))
    x = torch.rand(m, 3, 4, 4, generator=g)
    y = torch.randint(0, num_classes, (m,), generator=g)
    return feats, x, y


def _gap(sorted_scores: torch.Tensor, k: int) -> float:
    """Distance between the k-th and (k+1)-th smallest score (the decision margin)."""
    return float(sorted_scores[k] - sorted_scores[k - 1])


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------


def test_channel_scores_match_the_loop():
    feats, x, y = _data()
    ix, iy = channel_scores(feats, x, y, num_classes=10)
    lix, liy = loop_scores(feats, x, y, 10)
    assert ix.shape == iy.shape == (48,)
    assert torch.allclose(ix.double(), lix, rtol=1e-4)
    assert torch.allclose(iy.double(), liy, rtol=1e-4)


@pytest.mark.parametrize(("k_low_y", "k_high_x"), [(5, 5), (10, 3), (4, 0), (0, 6)])
def test_code_mode_selects_the_same_channels_as_the_loop(k_low_y, k_high_x):
    feats, x, y = _data()
    keep = select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=k_low_y, k_high_x=k_high_x)
    ix, iy = loop_scores(feats, x, y, 10)
    if k_low_y:
        assert _gap(iy.sort().values, k_low_y) > 1e-5  # the choice is not decided by rounding
    if k_high_x:
        assert _gap(ix.sort().values, 48 - k_high_x) > 1e-5
    expected = loop_keep_code(ix, iy, k_low_y, k_high_x)
    assert keep.dtype == torch.bool and keep.shape == (48,)
    assert torch.equal(keep, expected)
    dropped = int((~keep).sum())
    assert max(k_low_y, k_high_x) <= dropped <= k_low_y + k_high_x


@pytest.mark.parametrize("drop_frac", [0.05, 0.25, 0.5])
def test_paper_mode_drops_ceil_fraction_of_lowest_iy(drop_frac):
    feats, _, y = _data()
    keep = select_channels(feats, None, y, num_classes=10, mode="paper", drop_frac=drop_frac)
    _, iy = loop_scores(feats, None, y, 10)
    k = math.ceil(drop_frac * 48)
    assert int((~keep).sum()) == k
    expected = torch.ones(48, dtype=torch.bool)
    expected[torch.argsort(iy)[:k]] = False
    assert torch.equal(keep, expected)
    # every dropped channel scores below every kept one
    assert float(iy[~keep].max()) < float(iy[keep].min())


def test_paper_mode_drop_count_is_exact_for_round_fractions():
    # 7 % of 100 channels is 7, but 0.07 * 100 == 7.000000000000001 in floating point.
    feats, _, y = _data(m=32, c=100, spatial=(1, 1))
    keep = select_channels(feats, None, y, num_classes=10, mode="paper", drop_frac=0.07)
    assert int((~keep).sum()) == 7


def test_paper_mode_drops_at_least_one_channel():
    feats, _, y = _data(m=16, c=8)
    keep = select_channels(feats, None, y, num_classes=10, mode="paper", drop_frac=0.01)
    assert int((~keep).sum()) == 1


def test_selection_carries_no_gradient():
    feats, x, y = _data()
    feats = feats.clone().requires_grad_(True)
    for mode in ("paper", "code"):
        keep = select_channels(feats, x, y, num_classes=10, mode=mode, k_low_y=3, k_high_x=3)
        assert not keep.requires_grad
    ix, iy = channel_scores(feats, x, y, num_classes=10)
    assert not ix.requires_grad and not iy.requires_grad


def test_chunked_scores_equal_unchunked():
    feats, x, y = _data(c=20)
    a = channel_scores(feats, x, y, num_classes=10)
    b = channel_scores(feats, x, y, num_classes=10, chunk_size=7)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_vector_features_are_one_dimensional_channels():
    feats, x, y = _data(c=24, spatial=())
    keep = select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=2, k_high_x=2)
    ix, iy = loop_scores(feats, x, y, 10)
    assert torch.equal(keep, loop_keep_code(ix, iy, 2, 2))


@pytest.mark.parametrize("drop_frac", [0, 1, -0.1, 1.5, 0.0, 1.0])
def test_bad_drop_frac_raises(drop_frac):
    feats, _, y = _data(c=8)
    with pytest.raises(ValueError, match=r"drop_frac: expected a number in \(0, 1\)"):
        select_channels(feats, None, y, num_classes=10, mode="paper", drop_frac=drop_frac)
    with pytest.raises(ValueError, match="drop_frac"):
        ChannelMask(drop_frac=drop_frac)


@pytest.mark.parametrize("name", ["k_low_y", "k_high_x"])
def test_k_larger_than_channels_raises(name):
    feats, x, y = _data(c=8)
    with pytest.raises(ValueError, match=rf"{name}: expected an int in \[0, 8\] \(the layer has 8 channels\), got 9"):
        select_channels(feats, x, y, num_classes=10, mode="code", **{"k_low_y": 0, "k_high_x": 0, name: 9})


@pytest.mark.parametrize("name", ["k_low_y", "k_high_x"])
def test_negative_k_raises(name):
    with pytest.raises(ValueError, match=name):
        ChannelMask(mode="code", **{name: -1})


def test_code_mode_without_x_raises():
    feats, _, y = _data(c=8)
    with pytest.raises(ValueError, match=r"x: mode='code' .* needs the network input"):
        select_channels(feats, None, y, num_classes=10, mode="code", k_low_y=2, k_high_x=2)


def test_one_dimensional_features_raise():
    _, x, y = _data(c=8)
    with pytest.raises(ValueError, match=r"features: .*\[batch, channels, \.\.\.\]"):
        select_channels(torch.rand(64), x, y, num_classes=10)


def test_bad_mode_and_mismatched_batch_raise():
    feats, x, y = _data(c=8)
    with pytest.raises(ValueError, match="mode: expected 'paper' or 'code'"):
        select_channels(feats, x, y, num_classes=10, mode="both")
    with pytest.raises(ValueError, match="y has batch size 10"):
        select_channels(feats, x, y[:10], num_classes=10)
    with pytest.raises(ValueError, match="x has batch size 10"):
        select_channels(feats, x[:10], y, num_classes=10, mode="code", k_low_y=1, k_high_x=1)
    with pytest.raises(ValueError, match="num_classes"):
        select_channels(feats, x, y, num_classes=5)  # labels up to 9


# Scalar channels (1x1 maps, 2-D features) on CPU take an explicit feature-map series whose length
# depends on max|f|/σ, or a dense float64 solve when that series would be long; both must agree with
# the per-channel loop at every activation scale (the series once stopped after one term for
# max|f|/σ ≳ 5, and the scores came out near 0.77 instead of ≈ 6).
SCALES = [0.01, 0.1, 1.0, 3.0, 10.0, 100.0]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("sigma", [1.0, 5.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("layout", ["1x1", "2d"])
def test_scalar_channel_scores_and_selection_match_the_loop_at_every_scale(scale, sigma, dtype, layout):
    m, c, k = 60, 12, 2
    g = torch.Generator().manual_seed(1)
    base = torch.relu(torch.randn(m, c, dtype=torch.float64, generator=g)) * scale
    feats = (base.reshape(m, c, 1, 1) if layout == "1x1" else base).to(dtype)
    x = torch.rand(m, 3, 4, 4, dtype=torch.float64, generator=g).to(dtype)
    y = torch.arange(m) % 6
    ix, iy = channel_scores(feats, x, y, num_classes=6, sigma=sigma)
    assert ix.dtype == iy.dtype == dtype
    # the reference: a float64 loop of nhsic over the very values the fast path saw
    rix, riy = loop_scores(feats.double(), x.double(), y, 6, sigma=sigma)
    assert torch.allclose(ix.double(), rix, rtol=1e-4, atol=0.0), (ix, rix)
    assert torch.allclose(iy.double(), riy, rtol=1e-4, atol=0.0), (iy, riy)
    # the choices are not decided by rounding, so the kept channels must be exactly the loop's
    assert _gap(riy.sort().values, k) > 1e-6 * float(riy.abs().max())
    assert _gap(rix.sort().values, c - k) > 1e-6 * float(rix.abs().max())
    keep = select_channels(feats, x, y, num_classes=6, mode="code", k_low_y=k, k_high_x=k, sigma=sigma)
    assert torch.equal(keep, loop_keep_code(rix, riy, k, k))
    keep_paper = select_channels(feats, None, y, num_classes=6, mode="paper", drop_frac=k / c, sigma=sigma)
    expected = torch.ones(c, dtype=torch.bool)
    expected[torch.argsort(riy)[:k]] = False
    assert torch.equal(keep_paper, expected)


def test_large_scalar_activations_reproducer_from_the_issue():
    g = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(100, 6, 1, 1, dtype=torch.float64, generator=g)) * 10
    x = torch.rand(100, 3, 32, 32, dtype=torch.float64, generator=g)
    y = torch.arange(100) % 10
    ix, _ = channel_scores(f, x, y, num_classes=10)
    expected = torch.stack([nhsic(x, f[:, c]) for c in range(6)])
    assert torch.allclose(ix, expected, rtol=1e-6)
    assert float(ix.min()) > 3.0  # the broken series gave ≈ 0.77 for every channel


@pytest.mark.parametrize("scale", [3.0, 10.0])
def test_512_channel_code_mask_keeps_the_loops_channels(scale):
    # ResNet-18's pooled vector in the authors' code mode (k = 20): once 38 of 40 dropped channels
    # were wrong. scale 3 takes the series (p <= m/2), scale 10 the dense float64 solve.
    g = torch.Generator().manual_seed(0)
    feats = torch.relu(torch.randn(100, 512, generator=g)) * scale
    x = torch.rand(100, 3, 8, 8, generator=g)
    y = torch.arange(100) % 10
    keep = select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=20, k_high_x=20)
    ix, iy = loop_scores(feats.double(), x.double(), y, 10)
    assert torch.equal(keep, loop_keep_code(ix, iy, 20, 20))


@pytest.mark.parametrize("z", [0.0, 1e-6, 0.5, 3.0, 10.0, 14.0, 30.0, 200.0, float("inf")])
def test_series_length_bounds_the_poisson_tail(z):
    from ib_plugins.channel_mask import _series_length

    tol, limit = 1e-12, 80

    def tail(p: int) -> float:  # P(Poisson(z) >= p), summed in log space far past the mode
        if z == 0.0:
            return 0.0 if p > 0 else 1.0
        return sum(math.exp(-z + n * math.log(z) - math.lgamma(n + 1)) for n in range(p, p + 2000))

    p = _series_length(z, tol=tol, limit=limit)
    if p is None:
        assert not math.isfinite(z) or tail(limit) >= tol
        return
    assert 1 <= p <= limit
    assert tail(p) < tol
    if p > 1 and z > 0:
        assert tail(p - 1) >= tol * 1e-3  # not wastefully long


def test_nan_features_raise_naming_the_argument_before_scoring():
    from ib_plugins.errors import NonFiniteActivationError

    feats, x, y = _data(c=6, spatial=(1, 1))
    feats[3, 2] = float("nan")
    with pytest.raises(NonFiniteActivationError, match="features"):
        select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=1, k_high_x=1)
    feats[3, 2] = float("inf")
    with pytest.raises(NonFiniteActivationError, match="features"):
        channel_scores(feats, None, y, num_classes=10)


@pytest.mark.parametrize(
    ("dtype", "scale", "spatial"),
    [(torch.float64, 1e154, (1, 1)), (torch.float64, 1e200, (1, 1)), (torch.float64, 1e300, (1, 1)),
     (torch.float64, 1e154, (2, 2)), (torch.float64, 1e200, (2, 2)), (torch.float32, 1e30, (1, 1)),
     (torch.float32, 1e20, (2, 2)), (torch.float32, 1e30, (2, 2))],
)
def test_huge_features_score_finitely_as_the_formula_says(dtype, scale, spatial):
    """Issue 11, item 4: the fast path overflowed above ~1e154 (1x1 maps: OverflowError at 1e200)."""
    from ib_plugins.hsic import hsic_operator, nhsic_from_operators

    feats, x, y = _data(m=24, c=5, spatial=spatial)
    feats = (feats + 0.1 * torch.arange(24.0).reshape(24, 1, 1, 1)).double()  # distinct samples per channel
    ix, iy = channel_scores((feats * scale).to(dtype), x.to(dtype), y, num_classes=10)
    assert torch.isfinite(ix).all() and torch.isfinite(iy).all()
    # every off-diagonal kernel entry of a channel is exp(−huge) = 0: K = I, R_f = H / (1 + εm)
    m, eps = 24, 1e-5
    r_f = (torch.eye(m, dtype=torch.float64) - 1.0 / m) / (1 + eps * m)
    want_y = float(nhsic_from_operators(r_f, hsic_operator(F.one_hot(y, 10).double())))
    want_x = float(nhsic_from_operators(r_f, hsic_operator(x.double())))
    # 1x1 maps: the float64 series with two-sided centring (O(eps) from the spec's one-sided value);
    # float32 2x2 maps: float32 solves with eps = 1e-5 (the X operator is the worst conditioned)
    rtol = 1e-9 if spatial == (2, 2) and dtype == torch.float64 else 2e-3
    assert iy.double().tolist() == pytest.approx([want_y] * 5, rel=rtol)
    assert ix.double().tolist() == pytest.approx([want_x] * 5, rel=1e-2 if dtype == torch.float32 else rtol)


def test_channel_scores_name_inputs_of_the_wrong_type_or_device():
    feats, x, y = _data(m=16, c=4)
    with pytest.raises(TypeError, match=r"^features: expected a floating-point tensor, got dtype torch.int64"):
        channel_scores(feats.long(), x, y, num_classes=10)
    with pytest.raises(TypeError, match=r"^x: expected a floating-point tensor or None, got list"):
        channel_scores(feats, x.tolist(), y, num_classes=10)
    with pytest.raises(TypeError, match=r"^y: expected integer class indices .*torch.bool"):
        channel_scores(feats, x, y.bool(), num_classes=10)
    with pytest.raises(ValueError, match=r"^y: expected a tensor on the features' device \(cpu\), got meta"):
        channel_scores(feats, x, torch.empty_like(y, device="meta"), num_classes=10)
    with pytest.raises(ValueError, match=r"^features: HSIC needs a batch of at least 2 samples"):
        channel_scores(feats[:1], x[:1], y[:1], num_classes=10)
    with pytest.raises(ValueError, match=r"^features: expected at least one channel"):
        channel_scores(feats[:, :0], x, y, num_classes=10)


def test_zero_width_channels_score_zero():
    _, x, y = _data(m=16, c=4)
    ix, iy = channel_scores(torch.rand(16, 4, 0, 0), x, y, num_classes=10)
    assert ix.tolist() == [0.0] * 4 and iy.tolist() == [0.0] * 4


def test_tiny_sigma_does_not_divide_by_zero_in_the_series():
    """σ² underflows to 0 in 2σ² for σ = 1e-200: the fast path must not raise ZeroDivisionError."""
    feats, x, y = _data(m=16, c=4, spatial=(1, 1))
    ix, iy = channel_scores(feats.double(), x.double(), y, num_classes=10, sigma=1e-200)
    assert torch.isfinite(ix).all() and torch.isfinite(iy).all()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
    ({"eps": 0.0}, "eps"), ({"eps": float("inf")}, "eps"), ({"chunk_size": 0}, "chunk_size"),
])
def test_select_channels_rejects_bad_bandwidth_before_any_work(kwargs, match):
    feats, x, y = _data(c=6, spatial=(1, 1))
    with pytest.raises(ValueError, match=match):
        select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=1, k_high_x=1, **kwargs)


@pytest.mark.slow
def test_vectorised_selection_is_ten_times_faster_than_the_loop():
    g = torch.Generator().manual_seed(0)
    feats = torch.relu(torch.randn(100, 512, 1, 1, generator=g))
    x = torch.rand(100, 3, 32, 32, generator=g)
    y = torch.arange(100) % 10

    def vectorised():
        return select_channels(feats, x, y, num_classes=10, mode="code", k_low_y=20, k_high_x=20)

    def loop():
        ix, iy = loop_scores(feats, x, y, 10)
        return loop_keep_code(ix, iy, 20, 20)

    def best_of_3(fn):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
        return min(times), result

    # One intra-op thread: with several, a busy machine oversubscribes the loop's many tiny ops and
    # inflates its time (ratios of 25x and more were seen under load), which would hide a regression.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t_vec, keep = best_of_3(vectorised)
        t_loop, expected = best_of_3(loop)
    finally:
        torch.set_num_threads(threads)
    ratio = t_loop / t_vec
    print(f"\nchannel mask on [100, 512, 1, 1]: loop {t_loop:.3f} s, vectorised {t_vec:.3f} s, "
          f"speed-up {ratio:.1f}x (1 torch thread)")
    assert torch.equal(keep, expected)
    assert ratio >= 10.0, f"vectorised selection is only {ratio:.1f}x faster than the per-channel loop"


# --------------------------------------------------------------------------------------------
# ChannelMask schedule and state
# --------------------------------------------------------------------------------------------


def test_schedule_every_ten_skipping_the_first_batch():
    mask = ChannelMask(every=10, skip_first=True)
    assert [s for s in range(25) if mask.is_mask_step(s)] == [10, 20]
    labels = torch.arange(4)
    assert [s for s in range(25) if mask.begin_batch(labels)] == [10, 20]
    mask.reset_schedule()
    assert mask.begin_batch(labels) is False  # batch 0 of the new epoch


def test_schedule_every_batch():
    mask = ChannelMask(every=1, skip_first=False)
    assert all(mask.is_mask_step(s) for s in range(12))
    assert all(mask.begin_batch(torch.arange(4)) for _ in range(5))
    skipping = ChannelMask(every=1, skip_first=True)
    assert [s for s in range(4) if skipping.is_mask_step(s)] == [1, 2, 3]


@pytest.mark.parametrize(("kwargs", "match"), [({"every": 0}, "every"), ({"mode": "x"}, "mode"),
                                               ({"num_classes": 1}, "num_classes"), ({"y_kernel": "rbf"}, "y_kernel")])
def test_bad_channel_mask_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChannelMask(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -5.0}, "sigma"), ({"sigma": float("nan")}, "sigma"),
    ({"sigma": float("inf")}, "sigma"), ({"sigma": "5"}, "sigma"), ({"eps": 0.0}, "eps"), ({"eps": -1e-5}, "eps"),
    ({"eps": float("nan")}, "eps"), ({"chunk_size": 0}, "chunk_size"), ({"chunk_size": -3}, "chunk_size"),
    ({"chunk_size": True}, "chunk_size"), ({"chunk_size": 2.5}, "chunk_size"),
])
def test_channel_mask_rejects_bad_hyperparameters_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=f"{match}: expected"):
        ChannelMask(**kwargs)


def test_channel_mask_check_finite_must_be_a_bool():
    with pytest.raises(TypeError, match="check_finite"):
        ChannelMask(check_finite="yes")


def test_freeze_before_any_mask_raises():
    with pytest.raises(RuntimeError, match="no mask has been computed yet"):
        ChannelMask().freeze()


def test_freeze_rejects_non_bool_keep():
    with pytest.raises(ValueError, match="keep: expected a 1-D bool tensor"):
        ChannelMask().freeze(torch.ones(4))


def test_attach_twice_raises():
    net = ConvNet()
    mask = ChannelMask()
    mask.attach(net, "features")
    try:
        with pytest.raises(RuntimeError, match="already attached"):
            mask.attach(net, "conv")
    finally:
        mask.detach()
    assert count_hooks(net) == 0


# --------------------------------------------------------------------------------------------
# the mask inside a wrapped model
# --------------------------------------------------------------------------------------------

NUM_CLASSES = 4


def _masked_model(**mask_kwargs):
    net = ConvNet(channels=16, num_classes=NUM_CLASSES)
    kwargs = {"mode": "paper", "drop_frac": 0.25, "every": 1, "skip_first": False}
    kwargs.update(mask_kwargs)
    mask = ChannelMask(**kwargs)
    ib_model = wrap_model(net, ["features", "pool"], mask=mask, mask_layer="features", num_classes=NUM_CLASSES)
    return net, mask, ib_model


def _xy(m=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, 3, 4, 4, generator=g), torch.arange(m) % NUM_CLASSES


def test_masked_training_forward_zeroes_dropped_channels_in_recorded_activations():
    net, mask, ib_model = _masked_model()
    x, y = _xy()
    with torch.no_grad():
        unmasked = net.features(net.conv(x))
    ib_model.train()
    with ib_model.labels(y) as active:
        assert active
        ib_model(x)
    keep = mask.last_keep
    assert keep is not None and int((~keep).sum()) == 4  # ceil(0.25 * 16)
    expected_keep = select_channels(unmasked, None, y, num_classes=NUM_CLASSES, mode="paper", drop_frac=0.25)
    assert torch.equal(keep, expected_keep)
    recorded = ib_model.activations["features"]
    assert bool((recorded[:, ~keep] == 0).all())
    assert torch.allclose(recorded[:, keep], unmasked[:, keep])
    assert mask.num_masked == 1
    assert torch.isfinite(ib_model.ib_loss(x, y))


def test_code_mode_uses_the_forward_input():
    net, mask, ib_model = _masked_model(mode="code", k_low_y=2, k_high_x=3)
    x, y = _xy()
    with torch.no_grad():
        unmasked = net.features(net.conv(x))
    with ib_model.train().labels(y):
        ib_model(x)
    expected = select_channels(unmasked, x, y, num_classes=NUM_CLASSES, mode="code", k_low_y=2, k_high_x=3)
    assert torch.equal(mask.last_keep, expected)


def test_mask_inactive_outside_scheduled_batches():
    net, mask, ib_model = _masked_model(every=10, skip_first=True)
    x, y = _xy()
    with torch.no_grad():
        unmasked = net.features(net.conv(x))
    ib_model.train()
    with ib_model.labels(y) as active:  # batch 0: skipped
        assert not active
        ib_model(x)
    assert torch.equal(ib_model.activations["features"], unmasked)
    ib_model(x)  # outside labels(): never masked
    assert torch.equal(ib_model.activations["features"], unmasked)
    assert mask.num_masked == 0


def test_mask_computed_per_forward_in_a_two_forward_batch():
    _, mask, ib_model = _masked_model()
    x, y = _xy()
    x_adv = (x + 0.05).clamp(0, 1)
    with ib_model.train().labels(y):
        clean = ib_model(x)
        adv = ib_model(x_adv)
    assert mask.num_masked == 2
    assert torch.isfinite(ib_model.ib_loss(x, y, output=clean))
    assert torch.isfinite(ib_model.ib_loss(x, y, output=adv))


def test_code_mask_works_when_recording_is_paused():
    # A training forward inside labels() with recording switched off (capturing(False)) is still a
    # masked forward; in code mode the mask needs that forward's input.
    _, mask, ib_model = _masked_model(mode="code", k_low_y=2, k_high_x=2)
    x, y = _xy()
    with ib_model.train().labels(y), ib_model.capturing(False):
        out = ib_model(x)
    assert out.shape == (16, NUM_CLASSES)
    assert mask.num_masked == 1 and ib_model.num_records == 0


def test_eval_forward_without_frozen_mask_equals_unmasked_model():
    net, _, ib_model = _masked_model()
    x, y = _xy()
    with ib_model.train().labels(y):
        ib_model(x)  # a mask was computed during training...
    reference = ConvNet(channels=16, num_classes=NUM_CLASSES)
    reference.load_state_dict(net.state_dict())
    assert count_hooks(reference) == 0
    ib_model.eval()
    with ib_model.labels(y) as active:  # ...and even inside labels() eval forwards are not masked
        assert active
        out = ib_model(x)
    assert torch.equal(out, reference.eval()(x))


def test_frozen_mask_applies_constant_mask_in_eval():
    net, mask, ib_model = _masked_model()
    x, y = _xy()
    with ib_model.train().labels(y):
        ib_model(x)
    mask.freeze()
    keep = mask.frozen_keep
    assert torch.equal(keep, mask.last_keep)
    ib_model.eval()
    out1, out2 = ib_model(x), ib_model(x)
    assert torch.equal(out1, out2)
    with torch.no_grad():
        feats = net.features(net.conv(x)) * keep.view(1, -1, 1, 1).float()
        expected = net.fc(net.pool(feats))
    assert torch.allclose(out1, expected, atol=1e-6)
    # a new batch does not recompute it
    with ib_model.train().labels(y) as active:
        assert not active
        ib_model(x)
    assert torch.equal(mask.frozen_keep, keep)
    assert bool((ib_model.activations["features"][:, ~keep] == 0).all())
    mask.unfreeze()
    assert mask.frozen_keep is None


def test_frozen_mask_with_wrong_channel_count_raises():
    _, mask, ib_model = _masked_model()
    mask.freeze(torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"frozen mask has 5 channels but layer 'features' produced 16"):
        ib_model.eval()(_xy()[0])


def test_mask_state_survives_state_dict_round_trip():
    _, mask, ib_model = _masked_model()
    x, y = _xy()
    for _ in range(3):
        with ib_model.train().labels(y):
            ib_model(x)
        ib_model.clear_records()
    mask.freeze()
    state = ib_model.state_dict()
    assert "mask._extra_state" in state
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    _, mask2, ib_model2 = _masked_model()
    ib_model2.load_state_dict(torch.load(buf))
    assert mask2.step == mask.step == 2
    assert mask2.num_masked == mask.num_masked == 3
    assert torch.equal(mask2.frozen_keep, mask.frozen_keep)
    ib_model.eval(), ib_model2.eval()
    assert torch.equal(ib_model(x), ib_model2(x))


def test_unfrozen_mask_state_round_trip():
    _, _, ib_model = _masked_model()
    _, mask2, ib_model2 = _masked_model()
    mask2.freeze(torch.ones(16, dtype=torch.bool))
    ib_model2.load_state_dict(ib_model.state_dict())
    assert mask2.frozen_keep is None and mask2.step == -1


def test_mask_layer_from_preset_and_mode_string():
    from _models import DigitsLikeNet

    ib_model = wrap_model(DigitsLikeNet(), "all", mask="code", num_classes=10)
    assert ib_model.mask.layer_name == "conv3"  # the digits-cnn preset's mask layer
    assert ib_model.mask.k_low_y == ib_model.mask.k_high_x == 3  # its mask_k
    ib_model.unwrap()


def test_non_finite_activations_at_the_mask_layer_raise_naming_it_and_compute_no_mask():
    from ib_plugins.errors import NonFiniteActivationError

    net, mask, ib_model = _masked_model()
    x, y = _xy()
    x[2] = float("nan")  # propagates through the convolution to the masked layer's output
    ib_model.train()
    with ib_model.labels(y), pytest.raises(NonFiniteActivationError, match="mask layer 'features'"):
        ib_model(x)
    assert mask.last_keep is None and mask.num_masked == 0
    x_ok, _ = _xy(seed=1)  # the model stays usable
    with ib_model.labels(y):
        ib_model(x_ok)
    assert mask.num_masked == 1


@pytest.mark.parametrize("record_masked", [True, False])
def test_record_masked_chooses_what_the_ib_term_sees_at_the_mask_layer(record_masked):
    net = ConvNet(channels=16, num_classes=NUM_CLASSES)
    mask = ChannelMask(mode="paper", drop_frac=0.25, every=1, skip_first=False)
    ib_model = wrap_model(net, ["features", "pool"], mask=mask, mask_layer="features", num_classes=NUM_CLASSES,
                          record_masked=record_masked)
    assert ib_model.ib_config()["mask"]["record_masked"] is record_masked
    x, y = _xy()
    with torch.no_grad():
        unmasked = net.features(net.conv(x))
    with ib_model.train().labels(y):
        ib_model(x)
    recorded, keep = ib_model.activations["features"], mask.last_keep
    if record_masked:
        assert bool((recorded[:, ~keep] == 0).all())
    else:
        assert torch.allclose(recorded, unmasked)
    # either way the rest of the network ran on the masked features
    pooled = ib_model.activations["pool"].reshape(x.shape[0], 16, -1)  # [m, channels, 2*2]
    assert bool((pooled[:, ~keep] == 0).all()) and bool((pooled[:, keep] != 0).any())
    ib_model.remove_hooks()
    assert count_hooks(net) == 0


def test_record_masked_default_and_bad_value():
    net = ConvNet(channels=8, num_classes=NUM_CLASSES)  # no preset: the masked output, as Algorithm 1
    assert wrap_model(net, ["features"], mask="paper", mask_layer="features", num_classes=NUM_CLASSES).record_masked
    with pytest.raises(TypeError, match="record_masked: expected True or False"):
        wrap_model(ConvNet(channels=8, num_classes=NUM_CLASSES), ["features"], mask="paper", mask_layer="features",
                   num_classes=NUM_CLASSES, record_masked="no")
