"""The statistics of a campaign, pure (numpy and scipy only): the control-arm hash, the
pre-launch power check, lift with its delta-method interval, bootstrap intervals, and the Qini
coefficient and uplift by decile as scikit-uplift defines them (``sklift.metrics``:
``qini_curve``, ``perfect_qini_curve``, ``qini_auc_score`` and ``uplift_by_percentile`` with
``strategy="overall"``)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.stats import norm

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_HASH_SPACE = float(1 << 64)


def control_draw(customer_id: str, period: str) -> float:
    """The customer's uniform draw in [0, 1) for a period: blake2b, the same in every process
    (Python's ``hash()`` is salted per process)."""
    digest = hashlib.blake2b(f"{period}\x1f{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE


def in_control(customer_id: str, period: str, rate: float) -> bool:
    """Whether the customer is held out: ``hash(customer, period) < rate``."""
    return control_draw(customer_id, period) < rate


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Customers needed per arm to detect a lift with the given error rates."""

    control: int
    treatment: int


def required_sample(
    *,
    baseline_rate: float,
    minimum_lift: float,
    control_share: float = 0.5,
    alpha: float = 0.05,
    power: float = 0.8,
) -> SampleSize:
    """Two-proportion z-test, two-sided, unpooled alternative (Fleiss, Levin & Paik, 2003, eq.
    4.14, without continuity correction), for arms of unequal size: ``k`` treated per control.

    ``n_c = (z_{1-a/2} sqrt(p̄ q̄ (1 + 1/k)) + z_{1-b} sqrt(p1 q1 + p2 q2 / k))^2 / (p2 - p1)^2``
    with ``p̄ = (p1 + k p2) / (1 + k)``; ``n_t = k n_c``. With ``k = 1`` it is the textbook
    ``(z_a sqrt(2 p̄ q̄) + z_b sqrt(p1 q1 + p2 q2))^2 / Δ^2``.
    """
    p1 = baseline_rate
    p2 = baseline_rate + minimum_lift
    if not (0 < p1 < 1 and 0 < p2 < 1 and 0 < control_share < 1):
        raise ValueError("rates and the control share must lie in (0, 1)")
    k = (1 - control_share) / control_share
    pooled = (p1 + k * p2) / (1 + k)
    z_alpha = float(norm.ppf(1 - alpha / 2))
    z_beta = float(norm.ppf(power))
    root = z_alpha * math.sqrt(pooled * (1 - pooled) * (1 + 1 / k)) + z_beta * math.sqrt(
        p1 * (1 - p1) + p2 * (1 - p2) / k
    )
    control = math.ceil(root**2 / (p2 - p1) ** 2)
    return SampleSize(control=control, treatment=math.ceil(control * k))


@dataclass(frozen=True, slots=True)
class Lift:
    """Treatment over control: absolute (rate difference) and relative (ratio - 1), each with
    its normal 95% interval; relative is None when the control converted nobody."""

    absolute: float
    absolute_low: float
    absolute_high: float
    relative: float | None
    relative_low: float | None
    relative_high: float | None
    significant: bool


def lift(*, treated: int, treated_conversions: int, control: int, control_conversions: int) -> Lift:
    """Lift with delta-method intervals: ``Var(pt/pc) ≈ Var(pt)/pc² + pt² Var(pc)/pc⁴`` and
    ``Var(p) = p(1-p)/n``; significant when the relative interval (the absolute one when the
    control rate is 0) excludes 0."""
    if treated <= 0 or control <= 0:
        raise ValueError("both arms need customers")
    z = float(norm.ppf(0.975))
    pt = treated_conversions / treated
    pc = control_conversions / control
    var_t = pt * (1 - pt) / treated
    var_c = pc * (1 - pc) / control
    diff = pt - pc
    se_diff = math.sqrt(var_t + var_c)
    relative = low = high = None
    if pc > 0:
        relative = pt / pc - 1
        se_ratio = math.sqrt(var_t / pc**2 + pt**2 * var_c / pc**4)
        low, high = relative - z * se_ratio, relative + z * se_ratio
        significant = low > 0 or high < 0
    else:
        significant = diff - z * se_diff > 0 or diff + z * se_diff < 0
    return Lift(
        absolute=diff,
        absolute_low=diff - z * se_diff,
        absolute_high=diff + z * se_diff,
        relative=relative,
        relative_low=low,
        relative_high=high,
        significant=significant,
    )


def bootstrap_rates(
    *,
    treated: int,
    treated_conversions: int,
    control: int,
    control_conversions: int,
    rounds: int,
    seed: int,
) -> tuple[FloatArray, FloatArray]:
    """Bootstrap replicates of each arm's rate. Resampling n binary outcomes with replacement
    draws the conversion count from Binomial(n, p̂): the same distribution, without the rows."""
    rng = np.random.default_rng(seed)
    pt = rng.binomial(treated, treated_conversions / treated, rounds) / treated
    pc = rng.binomial(control, control_conversions / control, rounds) / control
    return pt.astype(np.float64), pc.astype(np.float64)


def percentile_interval(values: FloatArray) -> tuple[float, float] | None:
    """The 2.5th and 97.5th percentiles of the finite replicates (None if there are none)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def qini_curve(
    y_true: npt.ArrayLike, uplift: npt.ArrayLike, treatment: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """sklift's Qini curve: customers taken by descending score (ties taken together),
    ``Y_t(k) - Y_c(k) N_t(k) / N_c(k)``, starting at (0, 0)."""
    y = np.asarray(y_true, dtype=np.float64)
    score = np.asarray(uplift, dtype=np.float64)
    arm = np.asarray(treatment, dtype=np.float64)
    order = np.argsort(score, kind="mergesort")[::-1]
    y, score, arm = y[order], score[order], arm[order]
    thresholds = np.r_[np.where(np.diff(score))[0], score.size - 1]
    num_treated = np.cumsum(arm)[thresholds]
    y_treated = np.cumsum(y * arm)[thresholds]
    num_all = (thresholds + 1).astype(np.float64)
    num_control = num_all - num_treated
    y_control = np.cumsum(y * (1 - arm))[thresholds]
    values = y_treated - y_control * np.divide(
        num_treated, num_control, out=np.zeros_like(num_treated), where=num_control != 0
    )
    if num_all.size == 0 or values[0] != 0 or num_all[0] != 0:
        num_all = np.r_[0.0, num_all]
        values = np.r_[0.0, values]
    return num_all, values


def qini_coefficient(
    y_true: npt.ArrayLike, uplift: npt.ArrayLike, treatment: npt.ArrayLike
) -> float:
    """sklift's ``qini_auc_score`` (negative_effect=True): the area between the model's Qini
    curve and the random line, over the same for the perfect curve (scored ``y t - y (1-t)``)."""
    y = np.asarray(y_true, dtype=np.float64)
    arm = np.asarray(treatment, dtype=np.float64)
    x_model, y_model = qini_curve(y, uplift, arm)
    x_best, y_best = qini_curve(y, y * arm - y * (1 - arm), arm)
    baseline = float(np.trapezoid([0.0, y_best[-1]], [0.0, x_best[-1]]))
    perfect = float(np.trapezoid(y_best, x_best)) - baseline
    model = float(np.trapezoid(y_model, x_model)) - baseline
    return model / perfect if perfect != 0 else float("nan")


@dataclass(frozen=True, slots=True)
class DecileUplift:
    """One score bin: its arms' sizes and response rates, and their difference."""

    decile: int
    n_treatment: int
    n_control: int
    rate_treatment: float | None
    rate_control: float | None
    uplift: float | None


def uplift_by_decile(
    y_true: npt.ArrayLike, uplift: npt.ArrayLike, treatment: npt.ArrayLike, bins: int = 10
) -> list[DecileUplift]:
    """sklift's ``uplift_by_percentile(strategy="overall")``: sort every customer by descending
    score, split into ``bins`` near-equal parts (``np.array_split``), then per part the
    treatment rate minus the control rate (None where an arm is empty)."""
    y = np.asarray(y_true, dtype=np.float64)
    score = np.asarray(uplift, dtype=np.float64)
    arm = np.asarray(treatment, dtype=np.int64)
    order = np.argsort(score, kind="mergesort")[::-1]
    rows: list[DecileUplift] = []
    parts = zip(np.array_split(y[order], bins), np.array_split(arm[order], bins), strict=True)
    for index, (outcomes, arms) in enumerate(parts, start=1):
        treated = outcomes[arms == 1]
        held = outcomes[arms == 0]
        rate_t = float(treated.mean()) if treated.size else None
        rate_c = float(held.mean()) if held.size else None
        rows.append(
            DecileUplift(
                decile=index,
                n_treatment=int(treated.size),
                n_control=int(held.size),
                rate_treatment=rate_t,
                rate_control=rate_c,
                uplift=rate_t - rate_c if rate_t is not None and rate_c is not None else None,
            )
        )
    return rows


def bootstrap_qini(
    y_true: npt.ArrayLike,
    uplift: npt.ArrayLike,
    treatment: npt.ArrayLike,
    *,
    rounds: int,
    seed: int,
) -> FloatArray:
    """Qini coefficients of ``rounds`` resamples, drawn with replacement within each arm (the
    arms keep their sizes)."""
    y = np.asarray(y_true, dtype=np.float64)
    score = np.asarray(uplift, dtype=np.float64)
    arm = np.asarray(treatment, dtype=np.int64)
    rng = np.random.default_rng(seed)
    treated = np.flatnonzero(arm == 1)
    held = np.flatnonzero(arm == 0)
    out = np.empty(rounds, dtype=np.float64)
    for i in range(rounds):
        pick = np.r_[rng.choice(treated, treated.size), rng.choice(held, held.size)]
        out[i] = qini_coefficient(y[pick], score[pick], arm[pick])
    return out
