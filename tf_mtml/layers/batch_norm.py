"""BatchNormalization whose batch moments are exact to every order of differentiation."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_mtml")
class SecondOrderBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with batch variance `mean((x - mean(x))**2)`.

    TensorFlow's `tf.nn.moments` (behind Keras' layer on the TF backend) computes the
    variance around `stop_gradient(mean)`. The first derivative is unaffected (the variance
    is stationary in the mean), but second derivatives through the batch statistics are not:
    second-order MAML on a Conv-4 with BatchNorm got a meta-gradient 32% away from float64
    finite differences. This layer computes the moments without the stop, so meta-gradients
    through batch statistics (MAML's transductive BatchNorm) are exact; everything else
    (moving statistics, masks, `synchronized`, serialization) is Keras'.

    Args:
        **kwargs: Those of `keras.layers.BatchNormalization`.
    """

    def _moments(self, inputs, mask):
        if mask is not None or self.synchronized:
            return super()._moments(inputs, mask)
        mean = ops.mean(inputs, axis=self._reduction_axes, keepdims=True)
        variance = ops.mean(ops.square(inputs - mean), axis=self._reduction_axes)
        return ops.squeeze(mean, axis=self._reduction_axes), variance
