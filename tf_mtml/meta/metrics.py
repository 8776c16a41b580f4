"""Mean of per-episode scores with a 95% confidence interval, as few-shot papers report it."""

from __future__ import annotations

import keras

# Two-sided 95% quantile of the standard normal; meta-test sets have >= 1000 episodes, where
# the Student-t quantile (1.9623 at 1000) differs from it by 0.1%.
Z_95 = 1.959963984540054


@keras.saving.register_keras_serializable(package="tf_mtml")
class MeanWithConfidence(keras.metrics.Metric):
    """Streams the mean of per-episode values and its 95% confidence half-width.

    `result()` returns `{name: mean, name + "_ci95": 1.96 * std / sqrt(n)}` with the sample
    standard deviation (n - 1), i.e. the "accuracy +- CI over meta-test episodes" of
    Snell et al. 2017 and Finn et al. 2017. Running sums of `x` and `x**2` make it exact under
    `tf.distribute` (sums add across replicas); they are kept in float64 so that the variance of
    thousands of accuracies does not cancel.

    Args:
        name: Name of the mean; the half-width is reported as `name + "_ci95"`.
    """

    def __init__(self, name: str = "accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable((), initializer="zeros", dtype="float64", name="total")
        self.total_sq = self.add_variable((), initializer="zeros", dtype="float64",
                                          name="total_sq")
        self.count = self.add_variable((), initializer="zeros", dtype="float64", name="count")

    def update_state(self, values, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                "MeanWithConfidence does not take `sample_weight`: every episode counts once. "
                f"Received: sample_weight={sample_weight!r}"
            )
        values = keras.ops.reshape(keras.ops.cast(values, "float64"), (-1,))
        self.total.assign_add(keras.ops.sum(values))
        self.total_sq.assign_add(keras.ops.sum(keras.ops.square(values)))
        self.count.assign_add(keras.ops.cast(keras.ops.shape(values)[0], "float64"))

    def result(self) -> dict:
        n = self.count
        mean = keras.ops.divide_no_nan(self.total, n)
        variance = keras.ops.divide_no_nan(self.total_sq - n * keras.ops.square(mean), n - 1.0)
        half_width = Z_95 * keras.ops.sqrt(keras.ops.maximum(variance, 0.0)) / keras.ops.sqrt(
            keras.ops.maximum(n, 1.0))
        return {self.name: keras.ops.cast(mean, "float32"),
                f"{self.name}_ci95": keras.ops.cast(half_width, "float32")}
