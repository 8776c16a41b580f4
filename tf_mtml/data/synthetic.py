"""Synthetic two-task regression data with controllable task correlation (MMoE, sec. 3.2).

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, https://doi.org/10.1145/3219819.3220007.
"""

import dataclasses
import math

import numpy as np

from tf_mtml.data._common import is_int

TASK_NAMES = ("y1", "y2")
# First entropy word of each random stream, so the problem parameters and the samples never
# share a stream, whatever the seeds.
_PARAMETER_STREAM, _SAMPLE_STREAM = 0, 1


@dataclasses.dataclass(frozen=True)
class MMoESyntheticProblem:
    """The synthetic regression problem of the MMoE paper, whose task correlation is `p`.

    With orthogonal unit vectors `u1, u2` in `R^d`, `w1 = c·u1` and
    `w2 = c·(p·u1 + sqrt(1 - p²)·u2)`, so `cos(w1, w2) = p`. Each example draws
    `x ~ N(0, I_d)` and, for both tasks `k`,
    `y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε_k`, with `α_i, β_i ~ N(0, sin_param_std²)`
    shared by the tasks and fixed by `seed`, and `ε_k ~ N(0, noise_std²)`. The linear parts
    `w1ᵀx, w2ᵀx` have Pearson correlation `p`; the sines make the labels less correlated.

    Args:
        input_dim: `d`, at least 2.
        correlation: `p` in `[-1, 1]`.
        scale: `c > 0`.
        num_sin: `m >= 0`, number of sine terms.
        noise_std: standard deviation of `ε`, `>= 0` (0.1 in the paper).
        sin_param_std: standard deviation of `α_i, β_i`. Default 1: with 0.1 the sines are
            nearly linear and least squares reaches the noise floor at every correlation, so
            the task correlation stops mattering (BUILD_NOTES.md, MMoE synthetic).
        seed: non-negative seed of `u1, u2, α, β`.

    Example:

    >>> problem = MMoESyntheticProblem(input_dim=8, correlation=0.9)
    >>> x, labels = problem.sample(32, seed=1)
    >>> x.shape, labels["y1"].shape
    ((32, 8), (32,))
    """

    input_dim: int = 100
    correlation: float = 0.5
    scale: float = 1.0
    num_sin: int = 10
    noise_std: float = 0.1
    sin_param_std: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            ("input_dim", is_int(self.input_dim) and self.input_dim >= 2, "an integer >= 2"),
            ("correlation", abs(self.correlation) <= 1, "a number in [-1, 1]"),
            ("scale", 0 < self.scale < math.inf, "a positive finite number"),
            ("num_sin", is_int(self.num_sin) and self.num_sin >= 0, "a non-negative integer"),
            ("noise_std", 0 <= self.noise_std < math.inf, "a non-negative finite number"),
            ("sin_param_std", 0 <= self.sin_param_std < math.inf,
             "a non-negative finite number"),
            ("seed", is_int(self.seed) and self.seed >= 0, "a non-negative integer"),
        ]
        for name, valid, expected in checks:
            if not valid:  # NaN fails every comparison above, so it lands here too.
                raise ValueError(
                    f"Received an invalid value for `{name}`, expected {expected}. "
                    f"Received: {name}={getattr(self, name)!r}"
                )

    def unit_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns the orthonormal `u1, u2`, float64 arrays of shape `(input_dim,)`."""
        u1, u2, _, _ = self._parameters()
        return u1, u2

    def sin_parameters(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns `α, β`, float64 arrays of shape `(num_sin,)` shared by both tasks."""
        _, _, alpha, beta = self._parameters()
        return alpha, beta

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        """Returns `w1, w2`, float64 arrays of shape `(input_dim,)` with cosine `correlation`."""
        u1, u2, _, _ = self._parameters()
        p, c = self.correlation, self.scale
        return c * u1, c * (p * u1 + math.sqrt(1.0 - p * p) * u2)

    def sample(self, num_examples: int, seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Draws `num_examples` examples; the same `seed` gives the same examples.

        Args:
            num_examples: positive number of examples `n`.
            seed: non-negative seed of `x` and `ε`.

        Returns:
            `x` float32 `(n, input_dim)` and `{"y1": (n,), "y2": (n,)}` float32 labels.
        """
        if not is_int(num_examples) or num_examples <= 0:
            raise ValueError(
                "Received an invalid value for `num_examples`, expected a positive integer. "
                f"Received: num_examples={num_examples!r}"
            )
        if not is_int(seed) or seed < 0:
            raise ValueError(
                "Received an invalid value for `seed`, expected a non-negative integer. "
                f"Received: seed={seed!r}"
            )
        rng = np.random.default_rng([_SAMPLE_STREAM, self.seed, seed])
        x = rng.standard_normal((num_examples, self.input_dim))
        alpha, beta = self.sin_parameters()
        labels = {}
        for name, w in zip(TASK_NAMES, self.weights(), strict=True):
            linear = x @ w
            sines = np.sin(linear[:, None] * alpha + beta).sum(axis=1)
            noise = self.noise_std * rng.standard_normal(num_examples)
            labels[name] = (linear + sines + noise).astype(np.float32)
        return x.astype(np.float32), labels

    def _parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([_PARAMETER_STREAM, self.seed])
        # QR of a Gaussian matrix gives two orthonormal columns in a uniformly random plane.
        basis, _ = np.linalg.qr(rng.standard_normal((self.input_dim, 2)))
        alpha = rng.normal(0.0, self.sin_param_std, self.num_sin)
        beta = rng.normal(0.0, self.sin_param_std, self.num_sin)
        return basis[:, 0], basis[:, 1], alpha, beta
