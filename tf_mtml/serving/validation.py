"""Request checks that run inside served signatures, so that a bad request fails clearly.

TF Serving hands a request's tensors to the SavedModel's session as they come
(`PreProcessPrediction` in `tensorflow_serving/servables/tensorflow/predict_util.cc` checks input
names only): the session rejects a dtype that differs from the SignatureDef's (`INVALID_ARGUMENT:
Type mismatch: actual int32 vs. expect float [[{{node _arg_serving_default_features_0_0}}]]`),
but nothing rejects a wrong shape or value. A wrong inner shape would fail deep inside the
model ("Matrix size-incompatible"), or not at all: a pooled conv net embeds images of any size.
The checks here are assertion ops built into the exported graph; a failing one answers with
`INVALID_ARGUMENT: assertion failed: [<message>] [<what was received>]`, where the message names
the input and the signature, states what is expected and how to fix the request.

Every function returns an op; `gate` makes a dict of tensors depend on a list of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

# Values printed per tensor of a failed check: whole shapes, and enough ids to spot the bad one.
_SUMMARIZE = 32


def _prefix(endpoint: str, name: str) -> str:
    # Backticks, not quotes: the error text escapes quotes of assertion messages.
    return f"Input `{name}` of signature `{endpoint}`"


def _shape_text(dims: Sequence[int | None]) -> str:
    text = ", ".join("n" if d is None else str(d) for d in dims)
    return f"({text},)" if len(dims) == 1 else f"({text})"


def gate(inputs: Mapping[str, tf.Tensor], checks: Sequence) -> dict[str, tf.Tensor]:
    """`inputs` as new tensors that exist only once every op of `checks` has passed."""
    with tf.control_dependencies(list(checks)):
        return {name: tf.identity(value) for name, value in inputs.items()}


def shape_check(endpoint: str, name: str, x: tf.Tensor, spec: tf.TensorSpec) -> tf.Operation:
    """Asserts that `x` has the rank of `spec` and its known inner dimensions.

    Args:
        endpoint: The signature name, for the message.
        name: The input name.
        x: The fed tensor.
        spec: The declared `tf.TensorSpec`; its first dimension is the batch, None inner
            dimensions accept any size.

    Returns:
        The assertion op.
    """
    dims = spec.shape.as_list()
    rank = len(dims)
    # `tf.rank(x)` would be the constant rank of the signature: compare the runtime shape,
    # padded with -1, to a fixed length instead. A real size is >= 0, so `padded[:rank] >= 0`
    # means rank >= len(dims) and `padded[rank] == -1` means rank <= len(dims). The batch
    # dimension is None, so `tf.shape(x)` is never folded to a constant either.
    padded = tf.concat([tf.shape(x), tf.fill([rank + 1], -1)], 0)[:rank + 1]
    wanted = tf.constant([-1 if d is None else d for d in dims] + [-1], tf.int32)
    known = tf.constant([d is not None for d in dims] + [True])
    ok = tf.logical_and(
        tf.reduce_all(padded[:rank] >= 0),
        tf.reduce_all(tf.logical_or(tf.equal(padded, wanted), tf.logical_not(known))))
    inner = dims[1:]
    message = (
        f"{_prefix(endpoint, name)} must have shape {_shape_text([None, *inner])} "
        f"(n examples, the batch first) and dtype {spec.dtype.name}. Fix the request to send "
        "one such row per example. Received shape:")
    return tf.debugging.Assert(ok, [message, tf.shape(x)], summarize=_SUMMARIZE)


def finite_check(endpoint: str, name: str, x: tf.Tensor) -> tf.Operation:
    """Asserts that a float input holds no NaN or Inf (which would come out as NaN scores)."""
    message = (f"{_prefix(endpoint, name)} must hold finite values; found NaN or Inf. Impute "
               "or drop missing values before sending. Number of non-finite values:")
    bad = tf.logical_not(tf.math.is_finite(tf.reshape(x, [-1])))
    return tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                               [message, tf.math.count_nonzero(bad)])


def same_rows_check(endpoint: str, inputs: Mapping[str, tf.Tensor],
                    names: Sequence[str]) -> tf.Operation:
    """Asserts that the inputs `names` have the same number of rows (one per example)."""
    # A scalar has no rows: -1, which never matches a real count.
    rows = tf.stack([tf.concat([tf.shape(inputs[name]), [-1]], 0)[0] for name in names])
    listed = ", ".join(f"`{name}`" for name in names)
    message = (f"Inputs {listed} of signature `{endpoint}` must have the same number of rows, "
               "one per example. Send the same examples in each. Received row counts:")
    return tf.debugging.Assert(tf.reduce_all(tf.equal(rows, rows[0])), [message, rows],
                               summarize=_SUMMARIZE)


def id_range_check(endpoint: str, name: str, ids: tf.Tensor, num: int, what: str,
                   fix: str) -> tf.Operation:
    """Asserts that every id is in `[0, num)`.

    Args:
        endpoint: The signature name.
        name: The input name.
        ids: Integer ids.
        num: The exclusive upper bound.
        what: What the ids are, e.g. "task ids (0=click, 1=like)".
        fix: How to fix a request, e.g. "Map task names to ids in this order.".

    Returns:
        The assertion op.
    """
    ok = tf.reduce_all(tf.logical_and(ids >= 0, ids < num))
    message = f"{_prefix(endpoint, name)} must hold {what} in [0, {num}). {fix} Received:"
    return tf.debugging.Assert(ok, [message, ids], summarize=_SUMMARIZE)


def contiguous_labels_check(endpoint: str, name: str, labels: tf.Tensor) -> tf.Operation:
    """Asserts that class labels are `0..N-1` with every class present (N read from them)."""
    count = tf.size(tf.unique(tf.reshape(labels, [-1])).y)
    ok = tf.logical_and(
        tf.logical_and(tf.size(labels) > 0, tf.reduce_min(labels) >= 0),
        tf.equal(count, tf.reduce_max(labels) + 1))
    message = (f"{_prefix(endpoint, name)} must hold class labels 0..N-1 with every class "
               "present (N = number of classes of the request). Relabel the support classes "
               "0..N-1. Received:")
    return tf.debugging.Assert(ok, [message, labels], summarize=_SUMMARIZE)


def unit_interval_check(endpoint: str, name: str, x: tf.Tensor) -> tf.Operation:
    """Asserts that image intensities are in `[0, 1]` (the scale the model was trained on)."""
    ok = tf.reduce_all(tf.logical_and(x >= 0.0, x <= 1.0))
    message = (f"{_prefix(endpoint, name)} must hold intensities in [0, 1]; divide 8-bit "
               "pixels by 255. Received min and max:")
    return tf.debugging.Assert(ok, [message, tf.reduce_min(x), tf.reduce_max(x)])


def checked_inputs(endpoint: str, inputs: Mapping[str, tf.Tensor],
                   specs: Mapping[str, tf.TensorSpec]) -> dict[str, tf.Tensor]:
    """`inputs` gated on `shape_check` of each input, then `finite_check` of float ones.

    `export_saved_model` applies this to every signature before the served function runs. The
    later checks, like the model, run only on tensors of the declared shape: ops traced for
    that shape may fail differently on another.
    """
    inputs = gate(inputs, [shape_check(endpoint, name, inputs[name], spec)
                           for name, spec in specs.items()])
    return gate(inputs, [finite_check(endpoint, name, inputs[name])
                         for name, spec in specs.items() if spec.dtype.is_floating])
