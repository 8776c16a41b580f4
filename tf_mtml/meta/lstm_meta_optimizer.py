"""The LSTM meta-learner of Ravi & Larochelle: a learned update rule whose cell state is theta."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, LearnerWrapper
from tf_mtml.meta.fast_weights import functional_call, non_trainable_values, trainable_values
from tf_mtml.meta.maml import check_steps, support_loss
from tf_mtml.meta.reptile import check_learner, learner_dtype_kwargs

# Andrychowicz et al. 2016, Appendix A: inputs smaller than e^-p are encoded linearly.
PREPROCESSING_P = 10.0
# Preprocessed gradient (2) + preprocessed loss (2), the per-coordinate input of the LSTM.
NUM_FEATURES = 4


def preprocess(x) -> tf.Tensor:
    """Log/sign encoding of Andrychowicz et al. 2016: float `x` -> `(..., 2)`, same dtype.

    `(log|x| / p, sign(x))` if `|x| >= e^-p`, else `(-1, e^p * x)`, with `p = 10`: gradients
    and losses spanning many orders of magnitude become inputs of order one.
    """
    x = keras.ops.convert_to_tensor(x)
    magnitude = keras.ops.abs(x)
    large = magnitude >= math.exp(-PREPROCESSING_P)
    log_part = keras.ops.log(keras.ops.maximum(magnitude, math.exp(-PREPROCESSING_P)))
    return keras.ops.stack([
        keras.ops.where(large, log_part / PREPROCESSING_P, -1.0),
        keras.ops.where(large, keras.ops.sign(x), math.exp(PREPROCESSING_P) * x),
    ], axis=-1)


@keras.saving.register_keras_serializable(package="tf_mtml")
class LSTMMetaOptimizer(LearnerWrapper):
    """Optimization as a model for few-shot learning (Ravi & Larochelle, ICLR 2017).

    https://openreview.net/forum?id=rJY0-Kcll. A coordinate-wise LSTM, shared by every
    parameter of the learner, replaces SGD in the inner loop. Its cell state is the learner's
    flattened parameters, started at `c_0 = theta_0` (the learner's variables, meta-learned):

        c_t = f_t * c_{t-1} - i_t * g_t
        i_t = sigmoid(W_I [h_t, g~_t, L~_t, c_{t-1}, i_{t-1}] + b_I)
        f_t = sigmoid(W_F [h_t, g~_t, L~_t, c_{t-1}, f_{t-1}] + b_F)

    with `g_t` the gradient of the support loss `L_t` at `c_{t-1}`, `g~_t, L~_t` their
    log/sign encodings (`preprocess`) and `h_t` the output of a first, ordinary coordinate-wise
    LSTM (`hidden_units`) reading `[g~_t, L~_t]`, as in the paper's two-layer meta-learner;
    the encodings also enter the gates directly, as in its Eq. 2. `b_F` starts at
    `forget_bias` and `b_I` at `logit(inner_lr)` and the gate kernels near zero, so training
    starts close to SGD with learning rate `inner_lr`.

    Training differentiates the query loss after `inner_steps` updates with respect to the
    LSTM, the gates and `theta_0`, through the cell states. As in the paper, the learner's
    gradients and losses are inputs treated as constants (`tf.stop_gradient`): no
    second derivatives. Hence the outer gradient does not see that a larger step changes the
    next gradient, and a large outer learning rate can grow the input gate past the stable
    step size; Adam at 1e-3 to 1e-2 suits the tests' regression family. The inner steps are
    unrolled (a static number, typically 5-12), and each uses the whole support set.

    BatchNorm: the learner always runs with `training=True`, i.e. batch statistics for the
    support and the query set, and its moving statistics are never updated.

    Args:
        learner: A built Keras model; its variables are `theta_0`.
        inner_lr: Initial input-gate value (the starting SGD learning rate), in `(0, 1)`.
        inner_steps: Learned update steps per episode in training (0: no adaptation).
        eval_inner_steps: Update steps in inference (`training=False`, `adapt_and_predict`);
            `inner_steps` if None (the paper uses the same number).
        hidden_units: Width of the coordinate-wise gradient LSTM.
        forget_bias: Initial forget-gate bias (`sigmoid(5) = 0.993`: little weight decay).
        problem: `"classification"` or `"regression"`.
        **kwargs: Base model keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, S, ...)`, `support_y` `(B, S)` or `(B, S, 1)`,
            `query_x` `(B, Q, ...)`.

    Returns:
        Query predictions after adaptation, `(B, Q, ...)` float32.

    Example:
        ```python
        learner = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, "relu"),
                                    keras.layers.Dense(1)])
        meta = LSTMMetaOptimizer(learner, inner_steps=5, problem="regression")
        params = meta.adapt(support_x, support_y)  # one episode
        y = meta.predict_with(params, query_x)
        loss, grads, _ = meta.train_gradients(episodes, global_batch_size=4)
        ```
    """

    def __init__(
        self,
        learner: keras.Model,
        inner_lr: float = 0.01,
        inner_steps: int = 5,
        eval_inner_steps: int | None = None,
        hidden_units: int = 20,
        forget_bias: float = 5.0,
        problem: str = "classification",
        **kwargs,
    ):
        learner = check_learner(learner)
        super().__init__(problem=problem, **learner_dtype_kwargs(learner, kwargs))
        self.learner = learner
        if isinstance(inner_lr, bool) or not isinstance(inner_lr, int | float) or not (
                0 < inner_lr < 1):
            raise ValueError(
                "Received an invalid value for `inner_lr`, expected a float in (0, 1) (the "
                f"initial value of the sigmoid input gate). Received: inner_lr={inner_lr!r}"
            )
        self.inner_lr = float(inner_lr)
        self.inner_steps = check_steps("inner_steps", inner_steps)
        self.eval_inner_steps = (self.inner_steps if eval_inner_steps is None
                                 else check_steps("eval_inner_steps", eval_inner_steps))
        if isinstance(hidden_units, bool) or not isinstance(hidden_units, int) or hidden_units < 1:
            raise ValueError(
                "Received an invalid value for `hidden_units`, expected a positive integer. "
                f"Received: hidden_units={hidden_units!r}"
            )
        self.hidden_units = hidden_units
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, int | float) or not (
                math.isfinite(forget_bias)):
            raise ValueError(
                "Received an invalid value for `forget_bias`, expected a finite float. "
                f"Received: forget_bias={forget_bias!r}"
            )
        self.forget_bias = float(forget_bias)
        self.gradient_lstm = keras.layers.LSTMCell(hidden_units, dtype=self.dtype_policy,
                                                   name="gradient_lstm")
        self.gradient_lstm.build((None, NUM_FEATURES))
        # Gate inputs: h_t, the encoded gradient and loss, theta_{t-1}, the gate's last value.
        gate_inputs = hidden_units + NUM_FEATURES + 2
        small = keras.initializers.RandomUniform(-0.01, 0.01)
        input_bias = math.log(self.inner_lr / (1.0 - self.inner_lr))
        self.input_gate_kernel = self.add_weight(
            shape=(gate_inputs, 1), initializer=small, autocast=False, name="input_gate_kernel")
        self.input_gate_bias = self.add_weight(
            shape=(1,), initializer=keras.initializers.Constant(input_bias), autocast=False,
            name="input_gate_bias")
        self.forget_gate_kernel = self.add_weight(
            shape=(gate_inputs, 1), initializer=small, autocast=False, name="forget_gate_kernel")
        self.forget_gate_bias = self.add_weight(
            shape=(1,), initializer=keras.initializers.Constant(self.forget_bias),
            autocast=False, name="forget_gate_bias")
        self.built = True

    def initial_state(self, num_params) -> tuple[tf.Tensor, ...]:
        """`(h, c, i, f)` at t = 0: zeros `(P, hidden_units)`, `(P, hidden_units)`, `(P, 1)` x 2."""
        hidden = tf.zeros(tf.stack([num_params, self.hidden_units]), self.compute_dtype)
        gate = tf.zeros(tf.stack([num_params, 1]), self.compute_dtype)
        return hidden, hidden, gate, gate

    def update_step(self, params, grads, loss, state):
        """One learned update of the flat parameters `(P,)`.

        Args:
            params: `c_{t-1}`, `(P,)`, in the learner's variable dtype.
            grads: Gradient of the support loss at `params`, `(P,)` (treated as constant).
            loss: The scalar support loss (treated as constant).
            state: `(h, c, i, f)` from `initial_state` or the previous step.

        Returns:
            `(c_t, new_state)`.
        """
        grads, loss = tf.stop_gradient(grads), tf.stop_gradient(loss)
        hidden, carry, input_gate, forget_gate = state
        encoded_loss = keras.ops.broadcast_to(preprocess(loss), (tf.shape(grads)[0], 2))
        features = keras.ops.concatenate([preprocess(grads), encoded_loss], axis=-1)
        hidden, (_, carry) = self.gradient_lstm(features, [hidden, carry])
        shared = keras.ops.concatenate([hidden, features, params[:, None]], axis=-1)
        input_gate = keras.ops.sigmoid(keras.ops.matmul(
            keras.ops.concatenate([shared, input_gate], axis=-1), self.input_gate_kernel)
            + self.input_gate_bias)
        forget_gate = keras.ops.sigmoid(keras.ops.matmul(
            keras.ops.concatenate([shared, forget_gate], axis=-1), self.forget_gate_kernel)
            + self.forget_gate_bias)
        params = forget_gate[:, 0] * params - input_gate[:, 0] * grads
        return params, (hidden, carry, input_gate, forget_gate)

    def _unflatten(self, flat) -> list[tf.Tensor]:
        variables = self.learner.trainable_variables
        pieces = tf.split(flat, [math.prod(v.shape) for v in variables])
        return [tf.reshape(p, v.shape) for p, v in zip(pieces, variables, strict=True)]

    def adapt(self, support_x, support_y, steps: int | None = None) -> list[tf.Tensor]:
        """Fast weights after the learned updates on one episode's support set.

        Args:
            support_x: `(S, ...)` support inputs of one episode.
            support_y: `(S,)` labels or `(S, 1)` targets.
            steps: Update steps, `inner_steps` if None.

        Returns:
            One tensor per `learner.trainable_variables`, differentiable with respect to the
            meta-optimizer's variables and `theta_0`.
        """
        steps = self.inner_steps if steps is None else check_steps("steps", steps)
        non_trainable = non_trainable_values(self.learner)
        params = tf.concat([tf.reshape(v, (-1,)) for v in trainable_values(self.learner)], 0)
        state = self.initial_state(tf.shape(params)[0])
        for _ in range(steps):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(params)
                outputs = functional_call(self.learner, self._unflatten(params), support_x,
                                          training=True, non_trainable=non_trainable)
                loss = support_loss(self.problem, support_y, outputs)
            grads = tape.gradient(loss, params, unconnected_gradients="zero")
            params, state = self.update_step(params, grads, loss, state)
        return self._unflatten(params)

    def predict_with(self, params, x) -> tf.Tensor:
        """The learner's outputs on `x` with `params` (from `adapt`) as its weights."""
        return functional_call(self.learner, params, x, training=True)

    def call(self, episode: dict, training=None):
        steps = self.inner_steps if training else self.eval_inner_steps

        def adapt_one(inputs):
            support_x, support_y, query_x = inputs
            return keras.ops.cast(self.adapt_and_predict(support_x, support_y, query_x, steps),
                                  "float32")

        return tf.map_fn(adapt_one, (episode[SUPPORT_X], episode[SUPPORT_Y], episode[QUERY_X]),
                         fn_output_signature=tf.TensorSpec(None, "float32"))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": self.hidden_units,
            "forget_bias": self.forget_bias,
        }
