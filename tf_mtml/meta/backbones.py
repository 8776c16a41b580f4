"""The standard few-shot backbones: Conv-4, Conv-4 + linear head, and the sinusoid MLP.

Conv-4 (Vinyals et al. 2016, https://arxiv.org/abs/1606.04080; Snell et al. 2017; Finn et al.
2017) is four blocks of `[3x3 conv, BatchNorm, ReLU, 2x2 max-pool]`; a 28x28 Omniglot image
becomes a 64-d embedding (28 -> 14 -> 7 -> 3 -> 1). The Relation Network (Sung et al. 2018)
pools after the first two blocks only and keeps the feature maps: `conv4(pool_blocks=2,
flatten=False)`. The backbones are plain functional models, so metric learners call them and
gradient-based meta-learners run them on fast weights with `stateless_call`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_mtml.layers._validation import check_positive_int, check_units
from tf_mtml.layers.batch_norm import SecondOrderBatchNormalization

_NUM_BLOCKS = 4


def _check_input_shape(input_shape) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            "Received an invalid value for `input_shape`, expected `(height, width, channels)` "
            f"of positive integers, e.g. (28, 28, 1). Received: input_shape={input_shape!r}"
        )
    return shape


def conv4(
    input_shape: Sequence[int] = (28, 28, 1),
    filters: int = 64,
    pool_blocks: int = 4,
    flatten: bool = True,
    synchronized: bool = False,
    name: str = "conv4",
) -> keras.Model:
    """The Conv-4 embedding network of the few-shot literature.

    Four blocks of `[3x3 conv ("same" padding), BatchNorm, ReLU]`, the first `pool_blocks` of
    them followed by a 2x2 max-pool, then (optionally) a flatten. With the defaults a
    `(28, 28, 1)` image maps to a 64-d vector and the model has
    `9 * c * f + f + 3 * (9 * f * f + f)` conv and `4 * 4 * f` BatchNorm parameters.

    Args:
        input_shape: `(height, width, channels)` of one example.
        filters: Filters of every convolution.
        pool_blocks: How many leading blocks end with a 2x2 max-pool, `0..4`; `2` gives the
            Relation Network embedding module.
        flatten: Whether to flatten the feature maps into one vector.
        synchronized: Whether BatchNorm synchronizes its batch statistics across replicas
            (`keras.layers.BatchNormalization(synchronized=True)`).
        name: Name of the model.

    Returns:
        A functional `keras.Model` mapping `(batch, *input_shape)` to `(batch, d)` (or to the
        feature maps `(batch, h, w, filters)` when `flatten=False`).

    Example:
        ```python
        encoder = conv4()               # (batch, 28, 28, 1) -> (batch, 64)
        learner = PrototypicalNetwork(encoder)
        ```
    """
    input_shape = _check_input_shape(input_shape)
    check_positive_int("filters", filters)
    if type(pool_blocks) is not int or not 0 <= pool_blocks <= _NUM_BLOCKS:
        raise ValueError(
            "Received an invalid value for `pool_blocks`, expected an integer in 0..4 (the "
            f"number of blocks followed by max-pooling). Received: pool_blocks={pool_blocks!r}"
        )
    if min(input_shape[:2]) < 2**pool_blocks:
        raise ValueError(
            f"Received an `input_shape` too small for {pool_blocks} 2x2 max-pools: height and "
            f"width must be at least {2**pool_blocks}. Received: input_shape={input_shape}. "
            "Use larger images or fewer `pool_blocks`."
        )
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for i in range(_NUM_BLOCKS):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        # Momentum 0.9 (PyTorch's 0.1): with Keras' 0.99 the moving statistics lag far behind
        # in few-thousand-step meta-training (ProtoNet val accuracy after 100 steps: 73% with
        # moving statistics at 0.99 vs 93% with batch statistics).
        # Exact second derivatives through the batch statistics (second-order MAML).
        x = SecondOrderBatchNormalization(momentum=0.9, synchronized=synchronized,
                                          name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        if i < pool_blocks:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    if flatten:
        x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, x, name=name)


def conv4_classifier(
    num_classes: int,
    input_shape: Sequence[int] = (28, 28, 1),
    filters: int = 64,
    synchronized: bool = False,
    name: str = "conv4_classifier",
) -> keras.Model:
    """Conv-4 followed by a linear layer of `num_classes` logits (the MAML classifier).

    One flat functional model (not a nested encoder), so that fast weights are one list of
    `4 * 4 + 2` trainable tensors in layer order.

    Args:
        num_classes: Number of output logits (the `N` of N-way episodes).
        input_shape: `(height, width, channels)` of one example; at least 16x16.
        filters: Filters of every convolution.
        synchronized: Whether BatchNorm synchronizes its statistics across replicas.
        name: Name of the model.

    Returns:
        A functional `keras.Model` mapping `(batch, *input_shape)` to `(batch, num_classes)`.

    Example:
        ```python
        model = conv4_classifier(num_classes=5)
        maml = MAML(model, inner_steps=1, inner_learning_rate=0.4)
        ```
    """
    check_positive_int("num_classes", num_classes)
    backbone = conv4(input_shape, filters, synchronized=synchronized)
    logits = keras.layers.Dense(num_classes, name="logits")(backbone.output)
    return keras.Model(backbone.input, logits, name=name)


def mlp_regressor(
    hidden: Sequence[int] = (40, 40),
    input_dim: int = 1,
    output_dim: int = 1,
    name: str = "mlp_regressor",
) -> keras.Model:
    """The sinusoid-regression network of Finn et al. 2017: `1 -> 40 -> 40 -> 1`, ReLU.

    Finn et al., "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML
    2017, https://arxiv.org/abs/1703.03400.

    Args:
        hidden: Widths of the hidden ReLU layers.
        input_dim: Size of one input vector.
        output_dim: Size of one output vector (linear).
        name: Name of the model.

    Returns:
        A functional `keras.Model` mapping `(batch, input_dim)` to `(batch, output_dim)`.

    Example:
        ```python
        model = mlp_regressor()  # 1761 parameters
        ```
    """
    hidden = check_units("hidden", hidden)
    check_positive_int("input_dim", input_dim)
    check_positive_int("output_dim", output_dim)
    inputs = keras.Input((input_dim,), name="inputs")
    x = inputs
    for i, width in enumerate(hidden):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden{i}")(x)
    outputs = keras.layers.Dense(output_dim, name="output")(x)
    return keras.Model(inputs, outputs, name=name)
