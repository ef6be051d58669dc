"""Scoring helpers that take a fast path for a few values: both paths give the same answers."""

from __future__ import annotations

import numpy as np

from app.scoring.service import bands, rounded

THRESHOLDS = {"medium": 0.2, "high": 0.5}


def test_bands_and_rounding_agree_for_one_customer_and_for_a_batch() -> None:
    values = np.random.default_rng(3).random(500)
    values[:4] = [0.2, 0.5, 0.19999999, 1.0]  # the cut-offs themselves belong to the higher band

    batch_bands = bands(values, THRESHOLDS)
    batch_rounded = rounded(values, 6)

    assert batch_bands == [bands(values[i : i + 1], THRESHOLDS)[0] for i in range(len(values))]
    assert batch_rounded == [rounded(values[i : i + 1], 6)[0] for i in range(len(values))]
    assert batch_bands[:4] == ["medium", "high", "low", "high"]
    assert bands(values[:3], {}) == ["low"] * 3  # a model without thresholds bands nothing
