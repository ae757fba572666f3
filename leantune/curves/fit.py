"""Saturating learning-curve fit and the saturation point.

Model: ``metric(n) = a - b * n**(-c)`` (a: the plateau, c: how fast it is approached), fitted with
``scipy.optimize.curve_fit`` on every (size, seed) point with n > 0, each point weighted by one over
its size's number of runs, so every size counts the same however many seeds it has (with equal seeds
this is the unweighted fit; with unequal ones, a size with three seeds would otherwise pull the curve
three times as hard as one with a single seed). When that cannot work (fewer
than 3 sizes or 4 points, no convergence, the exponent stuck at its bound), a log-linear fit
``metric = a + s * log2(n)`` stands in and the reason is reported. For bounded metrics (accuracy,
F1, recall) the plateau is bounded by ``ceiling``: a curve still straight in log(n) would otherwise
be fitted with a plateau far above 1 and an exponent near 0 (a line in disguise); one that runs into
the bound, or an exponent at its lower bound, also falls back to the log-linear fit.

The saturation point is the size beyond which one more doubling of the data gains less than
``threshold``: for the power law, gain(n) = metric(2n) - metric(n) = b * n**(-c) * (1 - 2**(-c)),
so n* = (b * (1 - 2**(-c)) / threshold) ** (1 / c). A log-linear fit gains ``s`` per doubling at any
size, so it saturates everywhere (s < threshold) or nowhere (n* = inf). One size alone is no curve:
``fit_curve`` refuses it.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class CurveFit:
    kind: str  # "power" (a - b n^-c) or "loglinear" (a + s log2 n)
    params: dict  # power: a, b, c; loglinear: a, s
    n_points: int
    rmse: float
    fallback_reason: str = ""  # why the power law was not used ("" when it was)

    def predict(self, n) -> np.ndarray:
        n = np.asarray(n, dtype=np.float64)
        if self.kind == "power":
            return power_law(n, self.params["a"], self.params["b"], self.params["c"])
        return self.params["a"] + self.params["s"] * np.log2(n)

    def gain_per_doubling(self, n) -> np.ndarray:
        return self.predict(2 * np.asarray(n, dtype=np.float64)) - self.predict(n)

    def saturation_point(self, threshold: float) -> float:
        """Smallest n at which a doubling gains less than ``threshold`` (inf if it never does)."""
        if threshold <= 0:
            raise ValueError("gain threshold must be positive")
        if self.kind == "power":
            b, c = self.params["b"], self.params["c"]
            first = b * (1 - 2.0 ** (-c))  # gain per doubling at n = 1
            if first <= threshold:
                return 1.0
            # In log space: with a small exponent c, (first / threshold) ** (1 / c) overflows a float.
            log_point = math.log(first / threshold) / c
            return math.inf if log_point > 700 else math.exp(log_point)
        return 1.0 if self.params["s"] < threshold else math.inf

    def as_dict(self) -> dict:
        return asdict(self)


def power_law(n, a, b, c):
    return a - b * np.power(n, -c)


def size_weights(n: np.ndarray) -> np.ndarray:
    """Weight of each point: proportional to one over the number of points at its size, so each size
    weighs the same in all; scaled so that the points of the size with fewest runs weigh 1 (with equal
    seeds every weight is exactly 1 and the fit is the unweighted one)."""
    _, inverse, counts = np.unique(n, return_inverse=True, return_counts=True)
    return counts.min() / counts[inverse]


def _loglinear(n: np.ndarray, y: np.ndarray, reason: str) -> CurveFit:
    # polyfit's w multiplies the residual: sqrt of the per-point weight gives a weighted least squares
    s, a = np.polyfit(np.log2(n), y, 1, w=np.sqrt(size_weights(n)))
    fit = CurveFit("loglinear", {"a": float(a), "s": float(s)}, len(n), 0.0, reason)
    fit.rmse = float(np.sqrt(np.mean((fit.predict(n) - y) ** 2)))
    return fit


MIN_C = 1e-3


def fit_curve(sizes, values, max_c: float = 3.0, ceiling: float | None = None) -> CurveFit:
    """Fit ``a - b n^-c`` to (size, value) points with size > 0 (repeated sizes = seeds, each size
    weighted equally whatever its number of seeds); with ``ceiling``, the plateau ``a`` is at most that
    (1.0 for accuracy-like metrics)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    n = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keep = (n > 0) & np.isfinite(y)
    n, y = n[keep], y[keep]
    if len(n) == 0:
        raise ValueError("no points with size > 0 to fit")
    if len(np.unique(n)) < 2:
        # A line through one size is flat: it would claim saturation at any size.
        raise ValueError(f"sizes: a curve needs two distinct sizes > 0 or more, got only {n[0]:g}")
    if len(np.unique(n)) < 3:
        return _loglinear(n, y, f"power law needs 3 distinct sizes > 0, got {len(np.unique(n))}")
    if len(n) <= 3:
        return _loglinear(n, y, f"power law has 3 parameters: {len(n)} points leave no degree of freedom (add seeds or sizes)")
    span = float(y.max() - y.min()) or 1e-3
    # Start from a plateau a little above the best point and a moderate decay.
    a0 = float(y.max()) + 0.1 * span
    if ceiling is not None:
        a0 = min(a0, ceiling)
    p0 = (a0, span * float(n.min()) ** 0.5, 0.5)
    bounds = ([-np.inf, 0.0, MIN_C], [np.inf if ceiling is None else ceiling + 1e-9, np.inf, max_c])
    try:
        with warnings.catch_warnings():
            # "covariance could not be estimated" says nothing about the parameters we use
            warnings.simplefilter("ignore", OptimizeWarning)
            # sigma is the residual's scale: 1/sqrt(weight) makes the loss sum(weight * residual**2)
            params, _ = curve_fit(power_law, n, y, p0=p0, sigma=1.0 / np.sqrt(size_weights(n)), bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        return _loglinear(n, y, f"curve_fit failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    a, b, c = (float(v) for v in params)
    if not all(math.isfinite(v) for v in (a, b, c)):
        return _loglinear(n, y, "curve_fit returned non-finite parameters")
    if c >= max_c * 0.999:
        # c at its bound: the curve jumps to the plateau at once, which the data cannot pin down.
        return _loglinear(n, y, f"power-law exponent hit its bound (c = {max_c})")
    if ceiling is not None and a >= ceiling - 0.01:  # within a point of it: no plateau the data can place
        return _loglinear(n, y, f"the plateau went to the ceiling ({ceiling:g}): the data shows no bend toward a plateau")
    if c <= MIN_C * 1.01:
        return _loglinear(n, y, f"power-law exponent at its lower bound (c = {MIN_C}): no curvature in the data")
    fit = CurveFit("power", {"a": a, "b": b, "c": c}, len(n), 0.0)
    fit.rmse = float(np.sqrt(np.mean((fit.predict(n) - y) ** 2)))
    return fit


@dataclass
class Saturation:
    threshold: float
    point: float  # fitted saturation size (inf: not within any size)
    low: float  # bootstrap percentile interval of the point
    high: float
    level: float
    bootstrap: int  # resamples drawn
    bootstrap_power: int  # of which the power law was fitted (the rest fell back)
    bootstrap_infinite: int  # of which never saturate
    beyond_data: bool  # point larger than the largest size measured (an extrapolation)
    min_seeds: int  # fewest runs at any size: with 1 the seed bootstrap has nothing to resample
    per_size_gain: dict = field(default_factory=dict)  # fitted gain per doubling at each measured size
    over: str = "seeds"  # what the bootstrap resampled: "seeds", or "test units and seeds"

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_saturation(
    sizes,
    values,
    seeds,
    threshold: float = 0.01,
    resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator | None = None,
    fit: CurveFit | None = None,
    ceiling: float | None = None,
    unit_draws=None,
) -> Saturation:
    """Saturation point of the fit plus a bootstrap interval over seeds (and test units).

    Each resample redraws, for every size independently, as many runs as there are seeds (with
    replacement) from that size's seed runs, refits the curve and takes its saturation point. With
    ``unit_draws`` (shape (resamples, points): every point's value in bootstrap resamples of the
    test units, the same units drawn for all points, from ``leantune.evaluation.compare.resampled_metric``),
    resample ``b`` also takes its values from row ``b``: the interval then covers the test set's
    sampling as well, and has width with a single seed.
    """
    rng = rng or np.random.default_rng(0)
    n = np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keep = (n > 0) & np.isfinite(y)
    if unit_draws is not None:
        unit_draws = np.asarray(unit_draws, dtype=np.float64)
        if unit_draws.ndim != 2 or unit_draws.shape[1] != len(n):
            raise ValueError(f"unit_draws has shape {unit_draws.shape}: expected (resamples, {len(n)}), one column per point")
        resamples = unit_draws.shape[0]
        unit_draws = unit_draws[:, keep]
    n, y, seeds = n[keep], y[keep], np.asarray(seeds)[keep]
    fit = fit or fit_curve(n, y, ceiling=ceiling)
    point = fit.saturation_point(threshold)
    groups = [np.flatnonzero(n == s) for s in np.unique(n)]
    points, power = [], 0
    for b in range(resamples):
        idx = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        boot = fit_curve(n[idx], (y if unit_draws is None else unit_draws[b])[idx], ceiling=ceiling)
        power += boot.kind == "power"
        points.append(boot.saturation_point(threshold))
    points = np.asarray(points) if points else np.asarray([point])
    tail = (1 - level) / 2
    # Order statistics, not interpolation: resamples that never saturate give inf.
    low = float(np.quantile(points, tail, method="lower"))
    high = float(np.quantile(points, 1 - tail, method="higher"))
    measured = sorted(float(s) for s in np.unique(n))
    return Saturation(
        threshold=threshold,
        point=point,
        low=low,
        high=high,
        level=level,
        bootstrap=resamples,
        bootstrap_power=int(power),
        bootstrap_infinite=int(np.isinf(points).sum()) if resamples else 0,
        beyond_data=bool(point > max(measured)),
        min_seeds=int(min(len(g) for g in groups)),
        per_size_gain={int(s): float(fit.gain_per_doubling(s)) for s in measured},
        over="seeds" if unit_draws is None else "test units and seeds",
    )

