"""NT-Xent, the normalized temperature-scaled cross-entropy loss of SimCLR."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_mtml.losses.contrastive import _check_metric, _check_temperature
from tf_mtml.losses.supcon import _supcon_losses


def _check_two_views(embeddings) -> None:
    shape = tuple(tf.convert_to_tensor(embeddings).shape)
    if len(shape) != 3 or shape[1] != 2:
        raise ValueError(
            "NT-Xent expects the two views stacked as `(batch, 2, dim)`, e.g. "
            f"`ops.stack([view1, view2], axis=1)`. Received: embeddings.shape={shape}"
        )


def nt_xent(embeddings, temperature: float = 0.1, metric: str = "cosine") -> tf.Tensor:
    """NT-Xent loss of SimCLR (Chen et al. 2020, https://arxiv.org/abs/2002.05709), per example.

    The `2N` embeddings are two views of `N` examples. Each of them is an anchor whose one
    positive is the other view of its example and whose `2N - 2` negatives are all the other
    embeddings: `l(i, j) = -log(exp(s_ij / t) / sum_{k != i} exp(s_ik / t))` with the cosine
    similarity `s` (with `metric="euclidean"`/`"squared_euclidean"`, `s = -distance`).
    Example `n`'s loss is `(l(n, n') + l(n', n)) / 2`, so the mean over examples is the
    SimCLR loss `1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)]`.

    Args:
        embeddings: `(N, 2, dim)` with `N >= 2`, the two views stacked on axis 1; finite (NaN
            or Inf raises `InvalidArgumentError`). Not required to be normalized.
        temperature: Temperature `t > 0`.
        metric: `"cosine"` (SimCLR), `"euclidean"` or `"squared_euclidean"`.

    Returns:
        `(N,)` float32 losses.

    Example:
        ```python
        z = ops.stack([projector(encoder(view1)), projector(encoder(view2))], axis=1)
        loss = ops.mean(nt_xent(z, temperature=0.1))
        ```
    """
    temperature, metric = _check_temperature(temperature), _check_metric(metric)
    _check_two_views(embeddings)
    losses, _ = _supcon_losses(None, embeddings, temperature, metric, loss_name="NT-Xent")
    return losses


@keras.saving.register_keras_serializable(package="tf_mtml")
class NTXentLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `nt_xent`: `y_pred` is `(N, 2, dim)`; `y_true` is ignored.

    Keras needs some target in `fit`; pass any tensor with a leading dimension `N`, e.g.
    `np.zeros(N)`.

    Args:
        temperature: Temperature `t > 0`.
        metric: `"cosine"`, `"euclidean"` or `"squared_euclidean"`.
        name: Loss name.
        **kwargs: Base `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:
        ```python
        model.compile(optimizer="adam", loss=NTXentLoss(temperature=0.1))
        model.fit(two_view_images, np.zeros(len(two_view_images)))  # outputs (N, 2, dim)
        ```
    """

    def __init__(self, temperature: float = 0.1, metric: str = "cosine", name: str = "nt_xent",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = _check_temperature(temperature)
        self.metric = _check_metric(metric)

    def call(self, y_true, y_pred):
        return nt_xent(y_pred, self.temperature, self.metric)

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "metric": self.metric}
