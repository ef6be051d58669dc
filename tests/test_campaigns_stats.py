"""The campaign statistics against hand computation and textbook values: the control-arm hash
(the same in another process), the power check, the delta-method lift, bootstrap intervals,
and the Qini coefficient and uplift by decile as scikit-uplift defines them."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from app.campaigns import stats

IDS = [f"C{i:07d}" for i in range(2000)]


def test_control_arm_is_the_same_in_another_process_and_near_the_rate() -> None:
    here = [stats.in_control(c, "2026-12", 0.02) for c in IDS]
    code = (
        "import sys; from app.campaigns.stats import in_control;"
        "print(''.join('1' if in_control(f'C{i:07d}', '2026-12', 0.02) else '0'"
        " for i in range(2000)))"
    )
    # A different hash seed: Python's hash() would differ, blake2b must not.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert other == "".join("1" if held else "0" for held in here)
    # Another period reshuffles the arms.
    assert [stats.in_control(c, "2027-01", 0.02) for c in IDS] != here
    share = np.mean([stats.in_control(f"X{i}", "2026-12", 0.02) for i in range(100_000)])
    # Binomial sd at 100,000 draws is 0.00044: five of them either side.
    assert abs(share - 0.02) < 0.0022
    assert stats.control_draw("C1", "2026-12") == stats.control_draw("C1", "2026-12")


def test_required_sample_matches_the_textbook() -> None:
    # Fleiss, Levin & Paik (2003): p1 = 0.10, p2 = 0.15, alpha 0.05 two-sided, power 0.80,
    # equal arms, no continuity correction: 686 per arm (hand: 1.309194^2 / 0.05^2 = 685.6).
    equal = stats.required_sample(baseline_rate=0.10, minimum_lift=0.05, control_share=0.5)
    assert (equal.control, equal.treatment) == (686, 686)
    # A 2% control needs more held out customers than an even split, and 49 treated each.
    skewed = stats.required_sample(baseline_rate=0.10, minimum_lift=0.05, control_share=0.02)
    assert skewed.control > equal.control / 2
    assert skewed.treatment == math.ceil(skewed.control * 49)
    with pytest.raises(ValueError):
        stats.required_sample(baseline_rate=0.98, minimum_lift=0.05)


def test_lift_delta_method_matches_hand_computation() -> None:
    lift = stats.lift(treated=1000, treated_conversions=120, control=500, control_conversions=40)
    # pt = 0.12, pc = 0.08: Var(pt) = 0.0001056, Var(pc) = 0.0001472;
    # Var(pt/pc) = 0.0001056/0.0064 + 0.0144*0.0001472/0.00004096 = 0.06825, se = 0.261247.
    assert lift.relative == pytest.approx(0.5)
    assert lift.relative_low == pytest.approx(0.5 - 1.959964 * 0.261247, abs=1e-5)
    assert lift.relative_high == pytest.approx(0.5 + 1.959964 * 0.261247, abs=1e-5)
    assert not lift.significant  # the relative interval holds 0 (-0.0120, 1.0120)
    # The difference: 0.04 +- 1.959964 * sqrt(0.0002528).
    assert lift.absolute == pytest.approx(0.04)
    assert lift.absolute_low == pytest.approx(0.04 - 1.959964 * 0.0158997, abs=1e-6)
    strong = stats.lift(
        treated=4000, treated_conversions=480, control=2000, control_conversions=160
    )
    assert strong.significant and strong.relative_low is not None and strong.relative_low > 0
    nothing_held = stats.lift(
        treated=100, treated_conversions=30, control=50, control_conversions=0
    )
    assert nothing_held.relative is None and nothing_held.significant


def test_bootstrap_is_seeded_and_covers_the_rate() -> None:
    a = stats.bootstrap_rates(
        treated=1000,
        treated_conversions=120,
        control=500,
        control_conversions=40,
        rounds=500,
        seed=7,
    )
    b = stats.bootstrap_rates(
        treated=1000,
        treated_conversions=120,
        control=500,
        control_conversions=40,
        rounds=500,
        seed=7,
    )
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    interval = stats.percentile_interval(a[0])
    assert interval is not None and interval[0] < 0.12 < interval[1]
    # Close to the normal interval 0.12 +- 1.96 * 0.010276.
    assert interval[0] == pytest.approx(0.12 - 0.0201, abs=0.004)


Y = [1, 0, 1, 0, 1, 0]
TREATED = [1, 1, 0, 0, 1, 0]
SCORE = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]


def test_qini_curve_and_coefficient_match_hand_values() -> None:
    x, curve = stats.qini_curve(Y, SCORE, TREATED)
    # Y_t(k) - Y_c(k) N_t(k) / N_c(k) after each customer (0 while no control is seen).
    assert x.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert curve.tolist() == [0, 1, 1, -1, 0, 0.5, 1]
    # Model area 2.0; perfect curve (scores y t - y (1 - t)) (0,0) (2,2) (5,2) (6,1): 9.5;
    # random line to (6, 1): 3. Qini = (2 - 3) / (9.5 - 3) = -2/13.
    assert stats.qini_coefficient(Y, SCORE, TREATED) == pytest.approx(-2 / 13)
    # Ranking the responders to treatment first beats it.
    better = [0.9, 0.1, 0.2, 0.6, 0.8, 0.4]
    assert stats.qini_coefficient(Y, better, TREATED) > -2 / 13
    # Tied scores are taken together: one threshold.
    x_tied, curve_tied = stats.qini_curve(Y, [0.5] * 6, TREATED)
    assert x_tied.tolist() == [0, 6] and curve_tied.tolist() == [0, 1]


def test_uplift_by_decile_matches_hand_values() -> None:
    rows = stats.uplift_by_decile(Y, SCORE, TREATED, bins=2)
    # Top half: treated (1, 0) -> 0.5, control (1) -> 1.0; bottom: treated (1), control (0, 0).
    assert [(r.n_treatment, r.n_control) for r in rows] == [(2, 1), (1, 2)]
    assert [r.uplift for r in rows] == [pytest.approx(-0.5), pytest.approx(1.0)]
    ten = stats.uplift_by_decile([i % 2 for i in range(20)], list(range(20)), [1, 0] * 10)
    assert len(ten) == 10 and all(r.n_treatment + r.n_control == 2 for r in ten)
    one_arm = stats.uplift_by_decile([1, 0, 1], [0.3, 0.2, 0.1], [1, 1, 1], bins=3)
    assert all(r.rate_control is None and r.uplift is None for r in one_arm)


def test_bootstrap_qini_is_seeded() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    treated = rng.integers(0, 2, 400)
    score = rng.random(400)
    first = stats.bootstrap_qini(y, score, treated, rounds=30, seed=1)
    again = stats.bootstrap_qini(y, score, treated, rounds=30, seed=1)
    assert np.array_equal(first, again) and np.isfinite(first).all()
