"""Smoke test of bench/meta_speed.py: the whole benchmark at toy size, and its pieces."""

import dataclasses
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip(
    "torch", reason="the PyTorch peer is not installed; install the `bench` extra (torch==2.13.0)"
)

from bench import meta_speed  # noqa: E402
from tf_mtml.meta.maml import MAML  # noqa: E402


@pytest.fixture(scope="module")
def report():
    return meta_speed.run_benchmark(meta_speed.QUICK)


def test_flop_formulas_match_a_layer_by_layer_count():
    maml = meta_speed.maml_flops(meta_speed.MamlConfig())
    forward = 2 * (1 * 40 + 40 * 40 + 40 * 1)
    assert maml["forward_per_example"] == forward == 3360
    # 25 tasks: inner forward+backward on 10 support points (3F each), twice that again for
    # its derivative in the outer backward, forward+backward on 10 query points.
    assert maml["per_step"] == 25 * (3 * forward * 10 + 6 * forward * 10 + 3 * forward * 10)

    proto = meta_speed.protonet_flops(meta_speed.ProtoConfig(60, 5, 5))
    convs = [2 * 28 * 28 * 9 * 1 * 64, 2 * 14 * 14 * 9 * 64 * 64, 2 * 7 * 7 * 9 * 64 * 64,
             2 * 3 * 3 * 9 * 64 * 64]
    assert proto["conv_forward_per_image"] == convs
    distances = 2 * (60 * 5) * 60 * 64
    assert proto["per_step"] == 3 * (600 * sum(convs) + distances)
    assert proto["per_step_exact"] == proto["per_step"] - 600 * convs[0]


def test_fused_batch_norm_matches_the_batch_statistics_and_moving_averages():
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, (4, 5, 5, 3)).astype("float32")
    layer = meta_speed.FusedBatchNormalization(momentum=0.9, epsilon=1e-3)
    layer.build(x.shape)
    layer.gamma.assign(np.array([1.0, 2.0, 0.5], "float32"))
    layer.beta.assign(np.array([0.0, -1.0, 3.0], "float32"))
    y = keras.ops.convert_to_numpy(layer(x, training=True))

    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))  # biased, as Keras
    expected = (x - mean) / np.sqrt(var + 1e-3) * [1.0, 2.0, 0.5] + [0.0, -1.0, 3.0]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.9 + 0.1 * var, rtol=1e-5)
    # Inference uses the moving statistics, as the parent.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x, training=False)),
        (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-3) * [1.0, 2.0, 0.5] + [0, -1, 3],
        rtol=1e-4, atol=1e-4)


class ExactMomentsBatchNormalization(keras.layers.BatchNormalization):
    """Keras BN with twice-differentiable moments: `tf.nn.moments` stops the gradient of the
    mean inside the variance, exact for first derivatives only."""

    def _moments(self, inputs, mask):
        mean = tf.reduce_mean(inputs, self._reduction_axes)
        return mean, tf.reduce_mean(tf.square(inputs - mean), self._reduction_axes)


def _bn_learner(bn_class, dtype: str) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", dtype=dtype, name="conv")(inputs)
    x = bn_class(dtype=dtype, name="bn")(x)
    x = keras.layers.MaxPooling2D(2)(keras.layers.ReLU()(x))
    outputs = keras.layers.Dense(2, dtype=dtype)(keras.layers.Flatten()(x))
    return keras.Model(inputs, outputs)


def test_fused_batch_norm_gives_the_exact_second_order_maml_gradient():
    rng = np.random.default_rng(0)
    episode = {"support_x": rng.random((2, 4, 8, 8, 1)), "query_x": rng.random((2, 4, 8, 8, 1)),
               "support_y": np.array([[0, 0, 1, 1]] * 2), "query_y": np.array([[0, 1, 0, 1]] * 2)}

    def meta_gradient(learner, dtype):
        maml = MAML(learner, inner_lr=0.5, inner_steps=1, meta_batch_mode="map_fn")
        batch = {k: tf.constant(v, dtype if v.dtype.kind == "f" else "int32")
                 for k, v in episode.items()}
        return [g.numpy() for g in tf.function(maml.train_gradients)(batch, 2)[1]]

    keras.utils.set_random_seed(0)
    exact = _bn_learner(ExactMomentsBatchNormalization, "float64")
    fused = _bn_learner(meta_speed.FusedBatchNormalization, "float32")
    fused.set_weights([w.astype("float32") for w in exact.get_weights()])
    keras_bn = _bn_learner(keras.layers.BatchNormalization, "float32")
    keras_bn.set_weights(fused.get_weights())
    expected = meta_gradient(exact, "float64")
    assert meta_speed.rel_diff(meta_gradient(fused, "float32"), expected) < 1e-5
    # Why the change is proposed: Keras's layer drops second-order terms through the variance.
    assert meta_speed.rel_diff(meta_gradient(keras_bn, "float32"), expected) > 1e-2


def test_quick_run_reports_every_figure(report):
    json.dumps(report)
    workloads = ["maml_sinusoid", "protonet_3w2s1q"]
    assert [w for w in report if w.startswith(("maml", "protonet"))] == workloads
    for name in workloads:
        result = report[name]
        for figures in result["figures"].values():
            assert all(math.isfinite(v) and v > 0 for v in figures.values())
        shape = result["gemm_shape"]
        gemm = result["figures"]["tf_gemm"]
        np.testing.assert_allclose(gemm["gflops"] * gemm["ms_per_step"] / 1e3,
                                   2 * np.prod(shape) / 1e9, rtol=1e-9)
    assert report["all_targets_met"] == all(report[w]["targets_met"] for w in workloads)


def test_targets_are_computed_from_the_figures(report):
    for name, ours, references, ratio in (
        ("maml_sinusoid", ("ours_vectorized_map", "ours_map_fn", "ours_map_fn_xla"),
         ("torch_vmap", "torch_vmap_func_grad", "torch_vmap_1_thread"), "time_vs_torch_vmap"),
        ("protonet_3w2s1q", ("ours", "ours_xla"), ("torch", "torch_1_thread"), "time_vs_torch"),
    ):
        result, figures = report[name], report[name]["figures"]
        ms = {k: figures[k]["ms_per_step"] for k in (*ours, *references)}
        headline, reference = min(ours, key=ms.get), min(references, key=ms.get)
        assert (result["headline"], result["torch_reference"]) == (headline, reference)
        assert result["comparisons"][ratio] == pytest.approx(ms[headline] / ms[reference])
        gemm = max(figures["tf_gemm"]["gflops"], figures["tf_gemm_xla"]["gflops"])
        assert result["comparisons"]["fraction_of_gemm"] == pytest.approx(
            figures[headline]["gflops"] / gemm)
        targets = result["targets"]
        assert targets[ratio]["met"] == (result["comparisons"][ratio]
                                         <= meta_speed.TARGETS[name.split("_")[0]][ratio][1])
        assert targets["first_call_s"]["value"] == figures[headline]["first_call_s"]
        assert result["targets_met"] == all(t["met"] for t in targets.values())


def test_frameworks_agree_on_the_first_step(report):
    # Same init and data: every contender's first loss is the same number.
    for name in ("maml_sinusoid", "protonet_3w2s1q"):
        losses = [f["first_loss"] for f in report[name]["figures"].values() if "first_loss" in f]
        assert len(losses) >= 5
        np.testing.assert_allclose(losses, losses[0], rtol=1e-5)
    maml = report["maml_sinusoid"]["agreement"]
    assert maml["loss_rel_diff"] < 1e-6 and maml["grad_rel_diff"] < 1e-5
    # The comparison sees second-order terms: first-order MAML's gradient is far off.
    assert maml["grad_rel_diff_vs_torch_first_order"] > 100 * maml["grad_rel_diff"]
    proto = report["protonet_3w2s1q"]["agreement"]
    assert proto["loss_rel_diff"] < 1e-5 and proto["grad_rel_diff"] < 1e-4
    assert proto["fused_bn_loss_rel_diff"] < 1e-5 and proto["fused_bn_grad_rel_diff"] < 1e-4
    for name in ("ours", "ours_fused_bn", "torch"):
        assert 0 < proto[f"{name}_grad_rel_diff_vs_float64"] < 1e-4


def test_with_repeats_changes_only_the_repeats():
    default = meta_speed.BenchConfig()
    config = meta_speed.with_repeats(default, 7)
    assert config.maml == dataclasses.replace(
        default.maml, schedule=dataclasses.replace(default.maml.schedule, repeats=7))
    assert config.protonets == tuple(
        dataclasses.replace(p, schedule=dataclasses.replace(p.schedule, repeats=7))
        for p in default.protonets)
    assert (config.learning_rate, config.seed) == (default.learning_rate, default.seed)
