"""Small, dependency-free statistics for honest reports: intervals for accuracies and their differences.

Robustness numbers are proportions measured on a finite set of test images, so every figure the
library writes can carry its uncertainty:

* :func:`wilson_interval`: the Wilson score interval of one accuracy (``k`` of ``n`` correct);
* :func:`paired_difference_interval`: the interval of the difference of two accuracies measured on
  the **same** images (two networks, or a model before and after an attack), from the discordant
  pairs, by the Agresti–Min adjusted Wald method;
* :func:`mean_interval`: mean, standard deviation and Student-t interval of a few repeated runs
  (e.g. seeds), with :func:`t_quantile` computed from the regularised incomplete beta function.

Pure Python (:mod:`statistics` for the normal quantile); no numpy or scipy.

Example:
    >>> low, high = wilson_interval(45, 50)
    >>> round(low, 3), round(high, 3)
    (0.786, 0.957)
    >>> d, low, high = paired_difference_interval(better=6, worse=1, n=50)
    >>> round(d, 2), low < d < high
    (0.1, True)
"""

from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "paired_difference_interval", "normal_quantile", "t_quantile", "mean_interval"]


def _check_confidence(confidence: object) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    return float(confidence)


def _check_count(name: str, value: object, upper: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (upper is not None and value > upper):
        bound = f"[0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{name}: expected an int {'in ' if upper is not None else ''}{bound}, got {value!r}")
    return value


def normal_quantile(confidence: float = 0.95) -> float:
    """The two-sided standard normal quantile ``z`` of a confidence level (1.96 for 0.95).

    Args:
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``z`` with ``P(|Z| <= z) = confidence``.

    Raises:
        ValueError: ``confidence`` outside ``(0, 1)``.

    Example:
        >>> round(normal_quantile(0.95), 3)
        1.96
    """
    return NormalDist().inv_cdf((1 + _check_confidence(confidence)) / 2)


def wilson_interval(successes: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion.

    For ``k`` successes out of ``n``, with ``p = k / n`` and ``z`` the standard normal quantile
    of ``(1 + confidence) / 2`` (1.96 for 95 %)::

        (p + z²/2n ± z·sqrt(p(1 − p)/n + z²/4n²)) / (1 + z²/n)

    Unlike the normal approximation it stays inside ``[0, 1]`` and is not degenerate at
    ``k = 0`` or ``k = n``; its coverage is close to nominal even for small ``n`` (Brown, Cai &
    DasGupta 2001).

    Args:
        successes: ``k``, an int in ``[0, n]``.
        n: number of trials, an int >= 1.
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``(low, high)`` as fractions.

    Raises:
        ValueError: ``n``, ``successes`` or ``confidence`` out of range; the message names it.

    Example:
        >>> low, high = wilson_interval(18, 20)
        >>> round(low, 4), round(high, 4)
        (0.699, 0.9721)
        >>> wilson_interval(0, 10)[0], wilson_interval(10, 10)[1]
        (0.0, 1.0)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _check_count("successes", successes, n)
    z = normal_quantile(confidence)
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def paired_difference_interval(
    *, better: int, worse: int, n: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Difference of two accuracies on the same ``n`` samples, with its interval (Agresti–Min 2005).

    Only the discordant samples matter: ``better`` is the number the second classifier gets right
    and the first wrong, ``worse`` the reverse. The difference is ``(better − worse) / n``; the
    interval is the Wald interval after adding ½ to each cell of the 2×2 table, whose coverage is
    close to nominal even for small counts (Agresti & Min, Biometrics 61, 2005).

    Args:
        better: samples only the second classifier gets right.
        worse: samples only the first classifier gets right.
        n: samples in all (``better + worse <= n``).
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``(difference, low, high)`` as fractions; the interval is clipped to ``[-1, 1]``.

    Raises:
        ValueError: counts or ``confidence`` out of range; the message names the argument.

    Example:
        >>> d, low, high = paired_difference_interval(better=1, worse=0, n=450)
        >>> round(100 * d, 2), low < 0 < high  # one image of difference is inside the noise
        (0.22, True)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    _check_count("better", better, n)
    _check_count("worse", worse, n)
    if better + worse > n:
        raise ValueError(f"better, worse: expected better + worse <= n = {n}, got {better} + {worse}")
    z = normal_quantile(confidence)
    difference = (better - worse) / n
    b, c, m = better + 0.5, worse + 0.5, n + 2.0
    d = (b - c) / m
    half = z * math.sqrt(max((b + c) - (b - c) ** 2 / m, 0.0)) / m
    return difference, max(-1.0, d - half), min(1.0, d + half)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t quantile: ``P(|T| <= t) = confidence`` for ``df`` degrees of freedom.

    Computed by bisection on the t distribution's CDF (regularised incomplete beta function); no scipy.

    Args:
        confidence: the confidence level, in ``(0, 1)``.
        df: degrees of freedom, an int >= 1.

    Returns:
        The quantile.

    Raises:
        ValueError: ``confidence`` or ``df`` out of range.

    Example:
        >>> round(t_quantile(0.95, 2), 3), round(t_quantile(0.95, 30), 3)
        (4.303, 2.042)
    """
    _check_confidence(confidence)
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df: expected an int >= 1, got {df!r}")
    target = (1 + confidence) / 2
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < target:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2
        if _t_cdf(mid, df) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


def mean_interval(values: list[float] | tuple[float, ...], *, confidence: float = 0.95) -> dict[str, float | int | None]:
    """Mean, sample standard deviation and Student-t interval of the mean of a few runs.

    Args:
        values: the per-run values (e.g. one per seed); at least one.
        confidence: the confidence level, in ``(0, 1)``.

    Returns:
        ``{"n", "mean", "std", "low", "high", "half_width"}``; with a single value ``std`` and the
        interval are None (no spread can be estimated).

    Raises:
        ValueError: no values, a non-finite value, or ``confidence`` out of range.

    Example:
        >>> r = mean_interval([1.0, 2.0, 3.0])
        >>> r["mean"], r["std"], round(r["half_width"], 3)
        (2.0, 1.0, 2.484)
        >>> mean_interval([0.5])["low"] is None
        True
    """
    _check_confidence(confidence)
    data = [float(v) for v in values]
    if not data:
        raise ValueError("values: expected at least one value, got none")
    if not all(math.isfinite(v) for v in data):
        raise ValueError(f"values: expected finite numbers, got {data!r}")
    n = len(data)
    mean = sum(data) / n
    if n < 2:
        return {"n": n, "mean": mean, "std": None, "low": None, "high": None, "half_width": None}
    std = math.sqrt(sum((v - mean) ** 2 for v in data) / (n - 1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half, "half_width": half}
