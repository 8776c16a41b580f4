"""Tests of tf_mtml.meta.backbones."""

import keras
import numpy as np
import pytest

from tf_mtml.layers.batch_norm import SecondOrderBatchNormalization
from tf_mtml.meta.backbones import conv4, conv4_classifier, mlp_regressor


def _conv4_counts(channels: int, filters: int) -> tuple[int, int]:
    """(total, trainable) parameters of Conv-4 in closed form."""
    convs = (9 * channels * filters + filters) + 3 * (9 * filters * filters + filters)
    batch_norms = 4 * 4 * filters  # gamma, beta (trainable), moving mean and variance
    return convs + batch_norms, convs + batch_norms // 2


def _count(weights) -> int:
    return sum(int(np.prod(w.shape)) for w in weights)


def test_conv4_maps_28x28_to_64_with_closed_form_parameter_count():
    model = conv4()
    outputs = model(np.zeros((3, 28, 28, 1), "float32"))
    assert tuple(outputs.shape) == (3, 64)
    total, trainable = _conv4_counts(1, 64)
    assert (total, trainable) == (112_448, 111_936)
    assert model.count_params() == total
    assert _count(model.trainable_weights) == trainable


@pytest.mark.parametrize("shape,filters,expected", [((32, 32, 3), 8, (2, 2, 8)),
                                                    ((84, 84, 3), 4, (5, 5, 4))])
def test_conv4_other_sizes(shape, filters, expected):
    model = conv4(shape, filters=filters, flatten=False)
    assert tuple(model(np.zeros((1, *shape), "float32")).shape) == (1, *expected)
    assert model.count_params() == _conv4_counts(shape[-1], filters)[0]


def test_conv4_layer_order_is_conv_bn_relu_pool():
    # Batch statistics with exact second derivatives (MAML differentiates through them).
    assert SecondOrderBatchNormalization.__mro__[1] is keras.layers.BatchNormalization
    kinds = [type(layer).__name__ for layer in conv4().layers[1:]]
    block = ["Conv2D", "SecondOrderBatchNormalization", "ReLU", "MaxPooling2D"]
    assert kinds == block * 4 + ["Flatten"]


def test_relation_embedding_pools_only_first_two_blocks():
    model = conv4(pool_blocks=2, flatten=False)
    assert tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape) == (2, 7, 7, 64)
    assert sum(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers) == 2


def test_synchronized_batch_norm_passes_through():
    for model in (conv4(synchronized=True), conv4_classifier(5, synchronized=True)):
        norms = [layer for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization)]
        assert len(norms) == 4 and all(layer.synchronized for layer in norms)
    assert not any(getattr(layer, "synchronized", False) for layer in conv4().layers)


def test_conv4_classifier_is_flat_with_linear_head():
    model = conv4_classifier(5, filters=16)
    assert tuple(model(np.zeros((2, 28, 28, 1), "float32")).shape) == (2, 5)
    assert model.count_params() == _conv4_counts(1, 16)[0] + 16 * 5 + 5
    assert len(model.trainable_variables) == 4 * 4 + 2
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)


def test_mlp_regressor_matches_numpy_and_parameter_count():
    model = mlp_regressor()
    assert model.count_params() == (1 * 40 + 40) + (40 * 40 + 40) + (40 + 1) == 1761
    x = np.linspace(-5, 5, 7, dtype="float32")[:, None]
    h = x.astype("float64")
    kernels = model.get_weights()
    for i in range(0, len(kernels), 2):
        h = h @ kernels[i] + kernels[i + 1]
        if i < len(kernels) - 2:
            h = np.maximum(h, 0.0)
    np.testing.assert_allclose(model(x).numpy(), h, rtol=1e-5, atol=1e-6)


def test_mlp_regressor_custom_sizes():
    model = mlp_regressor(hidden=(8,), input_dim=3, output_dim=2)
    assert tuple(model(np.zeros((4, 3), "float32")).shape) == (4, 2)
    assert model.count_params() == 3 * 8 + 8 + 8 * 2 + 2


@pytest.mark.parametrize("kwargs,match", [
    ({"input_shape": (28, 28)}, "input_shape"),
    ({"input_shape": (28, 0, 1)}, "input_shape"),
    ({"filters": 0}, "filters"),
    ({"pool_blocks": 5}, "pool_blocks"),
    ({"pool_blocks": True}, "pool_blocks"),
    ({"input_shape": (8, 8, 1)}, "too small"),
])
def test_conv4_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv4(**kwargs)


def test_builders_reject_bad_sizes():
    with pytest.raises(ValueError, match="num_classes"):
        conv4_classifier(0)
    with pytest.raises(ValueError, match="hidden"):
        mlp_regressor(hidden=(40, 0))
    with pytest.raises(ValueError, match="input_dim"):
        mlp_regressor(input_dim=-1)
