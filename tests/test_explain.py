"""Reason codes add up to the model's raw score, for every kind of model the service trains."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pytest

from app.scoring.explain import (
    METHOD_PATH,
    METHOD_TREESHAP,
    Explanation,
    PathExplainer,
    exact_explanation,
)
from app.scoring.single_row import PREDICT_LEAF_INDEX, PREDICT_RAW_SCORE, SingleRowPredictor

FloatArray = npt.NDArray[np.float64]
N_ROWS = 2000
N_FEATURES = 6
CATEGORICAL = 5  # column holding integer category codes
ATOL = 1e-9


def _params(**overrides: Any) -> dict[str, Any]:
    """Small, deterministic LightGBM parameters so the whole file trains in seconds."""
    return {
        "num_leaves": 15,
        "num_threads": 1,
        "deterministic": True,
        "seed": 0,
        "verbose": -1,
        **overrides,
    }


def _features(rng: np.random.Generator, n: int = N_ROWS) -> FloatArray:
    """Numeric columns with ~10% NaNs and one categorical column of codes 0..5."""
    X = rng.normal(size=(n, N_FEATURES))
    X[:, CATEGORICAL] = rng.integers(0, 6, size=n)
    X[:, :CATEGORICAL][rng.random((n, CATEGORICAL)) < 0.1] = np.nan
    return X


def _signal(X: FloatArray) -> FloatArray:
    """A label signal that leans on a categorical effect, so '==' splits appear."""
    category_effect = np.array([-1.5, 0.0, 1.5, -0.5, 2.0, 0.5])[X[:, CATEGORICAL].astype(int)]
    # NaNs carry information (column 2 missing switches column 1 on), as in real books.
    signal: FloatArray = np.nan_to_num(X[:, 0]) + category_effect
    signal += 0.5 * np.nan_to_num(X[:, 1]) * np.isnan(X[:, 2])
    return signal


def _train(X: FloatArray, y: FloatArray, params: dict[str, Any], rounds: int = 50) -> lgb.Booster:
    """Train with the categorical column declared, as the service's models are."""
    data = lgb.Dataset(X, y, categorical_feature=[CATEGORICAL])
    return lgb.train(_params(**params), data, num_boost_round=rounds)


def _raw(booster: lgb.Booster, X: FloatArray, **kwargs: Any) -> FloatArray:
    """LightGBM's own raw score, shaped (n, k)."""
    raw = np.asarray(booster.predict(X, raw_score=True, **kwargs), dtype=np.float64)
    return raw.reshape(X.shape[0], -1)


def _decision_types(booster: lgb.Booster) -> set[str]:
    """Every split kind used in the model."""
    found: set[str] = set()
    stack = [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while stack:
        node = stack.pop()
        if "decision_type" in node:
            found.add(node["decision_type"])
            stack.extend([node["left_child"], node["right_child"]])
    return found


def _assert_additive(explanation: Explanation, raw: FloatArray) -> None:
    """Both the reported score and the sum of contributions match LightGBM's raw score."""
    np.testing.assert_allclose(explanation.raw_score, raw, rtol=0, atol=ATOL)
    np.testing.assert_allclose(explanation.contributions.sum(-1), raw, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.fixture(scope="module")
def X(rng: np.random.Generator) -> FloatArray:
    return _features(rng)


@pytest.fixture(scope="module", params=["binary", "multiclass", "regression"])
def model(request: pytest.FixtureRequest, X: FloatArray) -> tuple[lgb.Booster, int]:
    """A model per objective, trained on data with NaNs and a categorical column."""
    rng = np.random.default_rng(11)
    signal = _signal(X)
    if request.param == "binary":
        y = (signal + rng.logistic(size=len(X)) > 0).astype(float)
        return _train(X, y, {"objective": "binary"}), 1
    if request.param == "multiclass":
        y = np.digitize(signal + rng.normal(size=len(X)), [-0.5, 0.8]).astype(float)
        return _train(X, y, {"objective": "multiclass", "num_class": 3}), 3
    y = signal + 0.3 * rng.normal(size=len(X))
    return _train(X, y, {"objective": "regression"}), 1


def test_path_contributions_sum_to_raw_score(model: tuple[lgb.Booster, int], X: FloatArray) -> None:
    booster, k = model
    assert "==" in _decision_types(booster)  # categorical splits are exercised
    assert np.isnan(X).any()

    explanation = PathExplainer.from_booster(booster).explain(X)

    assert explanation.method == METHOD_PATH
    assert explanation.raw_score.shape == (len(X), k)
    assert explanation.contributions.shape == (len(X), k, N_FEATURES + 1)
    _assert_additive(explanation, _raw(booster, X))


def test_exact_explanation_has_the_same_layout_and_sums(
    model: tuple[lgb.Booster, int], X: FloatArray
) -> None:
    booster, k = model
    rows = X[:200]

    exact = exact_explanation(booster, rows)
    path = PathExplainer.from_booster(booster).explain(rows)

    assert exact.method == METHOD_TREESHAP
    assert exact.contributions.shape == path.contributions.shape == (200, k, N_FEATURES + 1)
    _assert_additive(exact, _raw(booster, rows))


def test_single_rows_and_chunks_match_one_batch(
    model: tuple[lgb.Booster, int], X: FloatArray
) -> None:
    booster, _ = model
    rows = X[:300]
    whole = PathExplainer.from_booster(booster).explain(rows)

    chunked = PathExplainer.from_booster(booster, chunk_rows=7).explain(rows)
    single = PathExplainer.from_booster(booster).explain(rows[42:43])

    np.testing.assert_allclose(chunked.contributions, whole.contributions, rtol=0, atol=1e-12)
    np.testing.assert_allclose(chunked.raw_score, whole.raw_score, rtol=0, atol=1e-12)
    np.testing.assert_allclose(single.contributions[0], whole.contributions[42], atol=1e-12)


def test_the_single_row_fast_path_matches_booster_predict(
    model: tuple[lgb.Booster, int], X: FloatArray
) -> None:
    """One row goes through LightGBM's C fast path: same leaves, same raw scores, every row."""
    booster, k = model
    rows = X[:150]
    n_iter = booster.num_trees() // k
    leaves = SingleRowPredictor(
        booster, predict_type=PREDICT_LEAF_INDEX, num_iteration=n_iter, n_outputs=n_iter * k
    )
    raw = SingleRowPredictor(
        booster, predict_type=PREDICT_RAW_SCORE, num_iteration=n_iter, n_outputs=k
    )
    explainer = PathExplainer.from_booster(booster)
    whole = explainer.explain(rows)

    expected_leaves = booster.predict(rows, pred_leaf=True)
    expected_raw = _raw(booster, rows)
    for i in range(len(rows)):
        np.testing.assert_array_equal(leaves(rows[i]), expected_leaves[i])
        np.testing.assert_allclose(raw(rows[i]), expected_raw[i], rtol=0, atol=1e-12)
        single = explainer.explain(rows[i : i + 1])
        np.testing.assert_allclose(single.contributions[0], whole.contributions[i], atol=1e-12)
        np.testing.assert_allclose(single.raw_score[0], expected_raw[i], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="float64 values"):
        raw(rows[0, :3])


def test_thread_count_does_not_change_the_numbers(
    model: tuple[lgb.Booster, int], X: FloatArray
) -> None:
    booster, _ = model

    default = PathExplainer.from_booster(booster).explain(X)
    one_thread = PathExplainer.from_booster(booster, num_threads=1).explain(X)

    np.testing.assert_array_equal(one_thread.contributions, default.contributions)
    np.testing.assert_array_equal(
        exact_explanation(booster, X[:20], num_threads=1).contributions,
        exact_explanation(booster, X[:20]).contributions,
    )


def test_empty_batch_keeps_the_layout(model: tuple[lgb.Booster, int], X: FloatArray) -> None:
    booster, k = model

    explanation = PathExplainer.from_booster(booster).explain(X[:0])

    assert explanation.raw_score.shape == (0, k)
    assert explanation.contributions.shape == (0, k, N_FEATURES + 1)


def test_single_leaf_trees_feed_the_bias(rng: np.random.Generator) -> None:
    # A rare third class has too little hessian to split, so its trees are single leaves.
    X = rng.normal(size=(N_ROWS, 4))
    y = np.where(X[:, 0] > 0, 0.0, 1.0)
    y[rng.random(N_ROWS) < 0.01] = 2.0
    params = _params(objective="multiclass", num_class=3, min_sum_hessian_in_leaf=30)
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=20)
    leaves = [tree["num_leaves"] for tree in booster.dump_model()["tree_info"]]
    assert min(leaves) == 1 < max(leaves)

    explanation = PathExplainer.from_booster(booster).explain(X)

    _assert_additive(explanation, _raw(booster, X))
    # Only the bias moves the rare class: its trees never split.
    np.testing.assert_array_equal(explanation.contributions[:, 2, :-1], 0.0)


def test_model_of_one_constant_tree(rng: np.random.Generator) -> None:
    X = rng.normal(size=(100, 3))
    params = _params(objective="regression", min_data_in_leaf=1000)
    booster = lgb.train(params, lgb.Dataset(X, X[:, 0] + 5.0), num_boost_round=5)
    assert booster.num_trees() == 1

    explanation = PathExplainer.from_booster(booster).explain(X)

    _assert_additive(explanation, _raw(booster, X))
    np.testing.assert_array_equal(explanation.contributions[:, 0, :-1], 0.0)


def test_best_iteration_is_honoured(rng: np.random.Generator) -> None:
    X, X_valid = rng.normal(size=(N_ROWS, 5)), rng.normal(size=(1000, 5))

    def label(X: FloatArray) -> FloatArray:
        return (X[:, 0] + 0.5 * X[:, 1] + rng.logistic(size=len(X)) > 0).astype(float)

    train = lgb.Dataset(X, label(X))
    booster = lgb.train(
        _params(objective="binary", learning_rate=0.3),
        train,
        num_boost_round=50,
        valid_sets=[lgb.Dataset(X_valid, label(X_valid), reference=train)],
        callbacks=[lgb.early_stopping(5, verbose=False)],
        keep_training_booster=True,
    )
    assert 0 < booster.best_iteration < booster.num_trees()

    explainer = PathExplainer.from_booster(booster)
    explanation = explainer.explain(X)

    assert explainer.num_iteration == booster.best_iteration
    _assert_additive(explanation, _raw(booster, X, num_iteration=booster.best_iteration))
    assert not np.allclose(explanation.raw_score, _raw(booster, X, num_iteration=-1))
    _assert_additive(exact_explanation(booster, X[:50]), _raw(booster, X[:50]))


def test_explicit_num_iteration(model: tuple[lgb.Booster, int], X: FloatArray) -> None:
    booster, _ = model

    explainer = PathExplainer.from_booster(booster, num_iteration=10)

    assert explainer.num_iteration == 10
    _assert_additive(explainer.explain(X), _raw(booster, X, num_iteration=10))
    assert PathExplainer.from_booster(booster, num_iteration=0).num_iteration == 50


def test_random_forest_scores_are_the_mean_of_the_trees(rng: np.random.Generator) -> None:
    # LightGBM's raw_score=True sums an rf model's trees, but predicts from their mean; the
    # explanation reports the mean, the value the link function actually sees.
    X = _features(rng)
    y = (_signal(X) > 0).astype(float)
    params = {"objective": "binary", "boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1}
    booster = _train(X, y, params, rounds=20)
    mean_raw = _raw(booster, X) / 20

    path = PathExplainer.from_booster(booster).explain(X)

    _assert_additive(path, mean_raw)
    _assert_additive(exact_explanation(booster, X[:50]), mean_raw[:50])
    probability = np.asarray(booster.predict(X), dtype=np.float64)
    np.testing.assert_allclose(1 / (1 + np.exp(-path.raw_score[:, 0])), probability, atol=1e-12)


def test_dominant_feature_dominates_in_both_methods(rng: np.random.Generator) -> None:
    X = rng.normal(size=(N_ROWS, 5))
    y = (2.0 * X[:, 0] + 0.1 * X[:, 1] + rng.logistic(size=N_ROWS) > 0).astype(float)
    booster = lgb.train(_params(objective="binary"), lgb.Dataset(X, y), num_boost_round=50)
    rows = X[:500]

    path = PathExplainer.from_booster(booster).explain(rows).contributions[:, 0, :-1]
    exact = exact_explanation(booster, rows).contributions[:, 0, :-1]

    for contributions in (path, exact):
        top = np.abs(contributions).argmax(axis=1)
        assert (top == 0).mean() > 0.9
    assert (np.sign(path[:, 0]) == np.sign(exact[:, 0])).mean() > 0.9


def test_linear_trees_are_rejected(rng: np.random.Generator) -> None:
    X = rng.normal(size=(500, 3))
    params = _params(objective="regression", linear_tree=True)
    booster = lgb.train(params, lgb.Dataset(X, X[:, 0] * 2.0), num_boost_round=3)

    with pytest.raises(ValueError, match="linear_tree"):
        PathExplainer.from_booster(booster)


@pytest.mark.parametrize("shape", [(5,), (5, N_FEATURES - 1), (1, 5, N_FEATURES)])
def test_wrong_shapes_are_rejected(model: tuple[lgb.Booster, int], shape: tuple[int, ...]) -> None:
    booster, _ = model
    explainer = PathExplainer.from_booster(booster)

    with pytest.raises(ValueError, match="columns"):
        explainer.explain(np.zeros(shape))
    with pytest.raises(ValueError, match="columns"):
        exact_explanation(booster, np.zeros(shape))
