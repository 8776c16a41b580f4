"""Tests for tf_mtml.data.synthetic."""

import dataclasses
import math
from statistics import NormalDist

import numpy as np
import pytest

from tf_mtml.data import TASK_NAMES, MMoESyntheticProblem

# Two-sided false-alarm rate of the statistical checks; fixes how many standard errors the
# tolerances allow (the seeds are fixed, so the checks are deterministic).
Z = NormalDist().inv_cdf(1 - 1e-6 / 2)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_unit_vectors_are_orthonormal(seed):
    u1, u2 = MMoESyntheticProblem(input_dim=50, seed=seed).unit_vectors()
    assert u1.shape == u2.shape == (50,)
    np.testing.assert_allclose([u1 @ u1, u2 @ u2, u1 @ u2], [1.0, 1.0, 0.0], atol=1e-12)


@pytest.mark.parametrize("correlation", [-1.0, -0.3, 0.0, 0.5, 0.9, 1.0])
def test_weights_have_cosine_p_and_norm_c(correlation):
    problem = MMoESyntheticProblem(input_dim=20, correlation=correlation, scale=2.5)
    w1, w2 = problem.weights()
    u1, u2 = problem.unit_vectors()
    np.testing.assert_allclose(w1, 2.5 * u1)
    np.testing.assert_allclose([np.linalg.norm(w1), np.linalg.norm(w2)], [2.5, 2.5])
    cosine = w1 @ w2 / (np.linalg.norm(w1) * np.linalg.norm(w2))
    np.testing.assert_allclose(cosine, correlation, atol=1e-12)


@pytest.mark.parametrize("correlation", [-0.3, 0.5, 0.9])
def test_linear_parts_have_pearson_correlation_p(correlation):
    problem = MMoESyntheticProblem(input_dim=30, correlation=correlation, seed=2)
    n = 20_000
    x, _ = problem.sample(n, seed=5)
    w1, w2 = problem.weights()
    r = np.corrcoef(x @ w1, x @ w2)[0, 1]
    # Large-sample standard error of Pearson's r.
    assert abs(r - correlation) <= Z * (1 - correlation**2) / math.sqrt(n - 1)


def test_labels_follow_the_formula():
    problem = MMoESyntheticProblem(input_dim=5, correlation=0.7, scale=3.0, num_sin=4,
                                   noise_std=0.0, seed=3)
    x, labels = problem.sample(64, seed=9)
    alpha, beta = problem.sin_parameters()
    assert set(labels) == set(TASK_NAMES)
    for name, w in zip(TASK_NAMES, problem.weights(), strict=True):
        expected = []
        for row in x.astype(np.float64):
            z = sum(w[j] * row[j] for j in range(len(row)))
            expected.append(z + sum(math.sin(a * z + b) for a, b in zip(alpha, beta, strict=True)))
        assert labels[name].dtype == np.float32
        np.testing.assert_allclose(labels[name], expected, rtol=1e-5, atol=1e-5)


def test_noise_is_independent_with_the_given_std():
    noise_std, n = 0.3, 20_000
    noisy = MMoESyntheticProblem(input_dim=4, noise_std=noise_std)
    clean = dataclasses.replace(noisy, noise_std=0.0)
    _, y = noisy.sample(n, seed=1)
    _, y_clean = clean.sample(n, seed=1)
    eps1 = y["y1"].astype(np.float64) - y_clean["y1"]
    eps2 = y["y2"].astype(np.float64) - y_clean["y2"]
    # Standard error of a sample std is about sigma / sqrt(2 (n - 1)); float32 labels add
    # rounding far below it.
    for eps in (eps1, eps2):
        assert abs(eps.std() - noise_std) <= Z * noise_std / math.sqrt(2 * (n - 1))
        assert abs(eps.mean()) <= Z * noise_std / math.sqrt(n)
    assert abs(np.corrcoef(eps1, eps2)[0, 1]) <= Z / math.sqrt(n - 1)


@pytest.mark.parametrize("std", [0.1, 1.0])
def test_sin_parameters_have_the_configured_std(std):
    alpha, beta = MMoESyntheticProblem(num_sin=20_000, sin_param_std=std).sin_parameters()
    for values in (alpha, beta):
        assert abs(values.std() - std) <= Z * std / math.sqrt(2 * (values.size - 1))
        assert abs(values.mean()) <= Z * std / math.sqrt(values.size)
    assert abs(np.corrcoef(alpha, beta)[0, 1]) <= Z / math.sqrt(alpha.size - 1)


def test_seeds_fix_the_data():
    problem = MMoESyntheticProblem(input_dim=8)
    x, y = problem.sample(16, seed=4)
    x_again, y_again = MMoESyntheticProblem(input_dim=8).sample(16, seed=4)
    np.testing.assert_array_equal(x, x_again)
    np.testing.assert_equal(y, y_again)
    assert x.shape == (16, 8) and x.dtype == np.float32
    assert not np.array_equal(problem.sample(16, seed=5)[0], x)
    other = MMoESyntheticProblem(input_dim=8, seed=1)
    assert not np.array_equal(other.weights()[0], problem.weights()[0])
    # Problem parameters and samples use separate streams.
    assert not np.array_equal(problem.sample(16, seed=0)[0], other.sample(16, seed=0)[0])


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MMoESyntheticProblem().correlation = 0.1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_dim": 1}, "input_dim=1"),
        ({"input_dim": 2.0}, "input_dim=2.0"),
        ({"correlation": 1.5}, "correlation=1.5"),
        ({"correlation": math.nan}, "correlation=nan"),
        ({"scale": 0.0}, "scale=0.0"),
        ({"scale": math.inf}, "scale=inf"),
        ({"num_sin": -1}, "num_sin=-1"),
        ({"noise_std": -0.1}, "noise_std=-0.1"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_invalid_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MMoESyntheticProblem(**kwargs)


@pytest.mark.parametrize(
    "num_examples, seed, match",
    [(0, 0, "num_examples=0"), (3.5, 0, "num_examples=3.5"), (3, -2, "seed=-2")],
)
def test_invalid_sample(num_examples, seed, match):
    with pytest.raises(ValueError, match=match):
        MMoESyntheticProblem().sample(num_examples, seed)


@pytest.mark.parametrize("std, nonlinear", [(0.1, False), (1.0, True)])
def test_sine_scale_decides_whether_labels_are_linear(std, nonlinear):
    # Least squares on x reaches the noise floor (0.01) only when the sines are ~linear.
    problem = MMoESyntheticProblem(input_dim=10, correlation=0.5, sin_param_std=std, seed=1)
    x, labels = problem.sample(4000, seed=2)
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, labels["y1"], rcond=None)
    residual = float(np.mean((design @ coef - labels["y1"]) ** 2))
    assert (residual > 10 * problem.noise_std**2) == nonlinear
