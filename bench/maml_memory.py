"""Peak memory of a second-order MAML step against inner steps, with and without recompute.

Second-order MAML keeps, for the outer backward pass, the activations and inner-gradient
intermediates of every inner step, so its memory grows linearly with the number of inner
steps. `MAML(recompute=True)` makes each inner step a gradient checkpoint
(`tf_mtml.meta.fast_weights.recomputed`): only the fast weights are kept and each step is
recomputed in the backward pass. This benchmark measures both on a model where activations
dominate: Conv-4 + linear head (`conv4_classifier`) on 28x28 images, 5-way 5-shot 5-query
episodes, meta-batch 4, `tf.function` train step (`train_gradients` + Adam), for inner steps
1, 2, 4, 8.

Each configuration runs in a fresh subprocess, which reports `ru_maxrss` after building the
model, after tracing the step and after two steps: `peak_mb` is the last minus the first
(the issue's figure), `step_mb` excludes the tracing. With `--tf_allocator_stats` (default)
the subprocess uses TF's BFC allocator on CPU (`TF_CPU_ALLOCATOR_USE_BFC`), whose own peak of
bytes in use by tensors (`tf_allocator_peak_mb`) separates tensor memory from malloc caching
and graph/kernel state. Slopes are least-squares MB per inner step. The first step's
meta-gradients with recompute off and on (same seed, same episode) are compared as measured,
in float32, and in float64 (in this process, `float64_filters` filters), which decides: in
float32 this model's meta-gradient carries errors of up to a few percent either way.

    .venv/bin/python -m bench.maml_memory [--inner_steps=1,2,4,8] [--meta_batch_size=4]
    .venv/bin/python -m bench.maml_memory --quick  # toy sizes

Prints one JSON object. Runtime on 2 cores: about 6 minutes while other jobs load them
(`--quick`: 1-4 minutes). Measured so (load ~7, TF 2.21): tensor memory (TF allocator peak)
grows 198 MB per inner step without recompute and 18 MB with it (flat at ~515 MB from 4 to 8
steps); peak RSS grows 295 vs 129 MB per step. The rest of the RSS growth with recompute is
not activations but graph memory: the unrolled step graph grows with the inner steps (each
step appears twice with recompute), and its tracing, grappler optimization and kernels take
~50-130 MB per step. Recompute costs up to 1.3x step time here. Meta-gradients agree to
1e-14 in float64; in float32 they differ by up to 2% (1 step), as do float32 and float64.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench._common import machine_info
from bench.meta_speed import rel_diff
from tf_mtml.data.episodes import episode_dataset
from tf_mtml.data.labelled import ClassIndexedData
from tf_mtml.meta.backbones import conv4_classifier
from tf_mtml.meta.maml import MAML

FLAGS = flags.FLAGS
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# In float64, recompute must give the meta-gradient of plain backpropagation to round-off.
FLOAT64_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class MemoryConfig:
    inner_steps: tuple[int, ...] = (1, 2, 4, 8)
    num_ways: int = 5
    num_shots: int = 5
    num_queries: int = 5
    meta_batch_size: int = 4
    image_size: int = 28
    filters: int = 64
    inner_lr: float = 0.1
    meta_batch_mode: str = "vectorized_map"
    learning_rate: float = 1e-3
    tf_allocator_stats: bool = True
    # Filters of the float64 gradient check (float64 convolutions are slow on CPU).
    float64_filters: int = 8
    seed: int = 0


QUICK = MemoryConfig(inner_steps=(1, 2, 3), num_ways=2, num_shots=1, num_queries=1,
                     meta_batch_size=2, image_size=16, filters=4, float64_filters=4)


def define_flags() -> None:
    flags.DEFINE_list("inner_steps", list(map(str, MemoryConfig.inner_steps)),
                      "Inner steps to measure, comma-separated.")
    flags.DEFINE_integer("meta_batch_size", MemoryConfig.meta_batch_size, "Episodes per step.")
    flags.DEFINE_bool("tf_allocator_stats", True, "Use TF's BFC allocator on CPU and report "
                      "its peak of tensor memory.")
    flags.DEFINE_bool("quick", False, "Toy sizes: a smoke run.")
    flags.DEFINE_string("child", None, "Internal: JSON of one configuration to measure here.")
    flags.DEFINE_string("grads_path", None, "Internal: where the child saves its gradients.")


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (`ru_maxrss` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def episode(config: MemoryConfig) -> dict[str, tf.Tensor]:
    """One meta-batch of random-image episodes from the library's episode pipeline."""
    per_class = config.num_shots + config.num_queries
    rng = np.random.default_rng(config.seed)
    images = rng.random((config.num_ways * per_class, config.image_size, config.image_size, 1),
                        dtype=np.float32)
    data = ClassIndexedData(images, np.repeat(np.arange(config.num_ways), per_class))
    dataset = episode_dataset(data, config.num_ways, config.num_shots, config.num_queries,
                              meta_batch_size=config.meta_batch_size, seed=config.seed,
                              num_episodes=config.meta_batch_size)
    return next(iter(dataset))


def measure_configuration(config: MemoryConfig, inner_steps: int, recompute: bool,
                          grads_path: str) -> dict:
    """Builds, traces and runs two train steps here; saves the first step's gradients."""
    keras.utils.set_random_seed(config.seed)
    learner = conv4_classifier(config.num_ways, (config.image_size, config.image_size, 1),
                               config.filters)
    maml = MAML(learner, inner_lr=config.inner_lr, inner_steps=inner_steps,
                recompute=recompute, meta_batch_mode=config.meta_batch_mode)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(maml.trainable_variables)
    batch = episode(config)

    @tf.function
    def step(batch):
        loss, grads, _ = maml.train_gradients(batch, config.meta_batch_size)
        optimizer.apply(grads, maml.trainable_variables)
        return loss, grads

    built = max_rss_mb()
    step.get_concrete_function(batch)
    traced = max_rss_mb()
    if config.tf_allocator_stats:
        tf.config.experimental.reset_memory_stats("CPU:0")
    start = time.perf_counter()
    loss, grads = step(batch)
    first_s = time.perf_counter() - start
    start = time.perf_counter()
    float(step(batch)[0])
    step_s = time.perf_counter() - start
    peak = max_rss_mb()
    np.savez(grads_path, *[g.numpy() for g in grads])
    result = {"inner_steps": inner_steps, "recompute": recompute, "loss": float(loss),
              "rss_after_build_mb": built, "trace_mb": traced - built, "peak_mb": peak - built,
              "step_mb": peak - traced, "first_step_s": first_s, "step_s": step_s}
    if config.tf_allocator_stats:
        result["tf_allocator_peak_mb"] = (
            tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20)
    return result


def run_child(config: MemoryConfig, inner_steps: int, recompute: bool, grads_path: str) -> dict:
    """`measure_configuration` in a fresh Python process; returns its figures."""
    child = json.dumps({"config": dataclasses.asdict(config), "inner_steps": inner_steps,
                        "recompute": recompute})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    if config.tf_allocator_stats:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.maml_memory", f"--child={child}",
         f"--grads_path={grads_path}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"The measurement of inner_steps={inner_steps}, "
                           f"recompute={recompute} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def slope(steps: list[int], values: list[float]) -> float:
    """Least-squares MB per inner step."""
    return float(np.polyfit(steps, values, 1)[0])


def float64_meta_gradients(config: MemoryConfig, inner_steps: int,
                           recompute: bool) -> list[np.ndarray]:
    """The first step's meta-gradient in float64, with `float64_filters` filters, here."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float64")
    try:
        keras.utils.set_random_seed(config.seed)
        learner = conv4_classifier(config.num_ways, (config.image_size, config.image_size, 1),
                                   config.float64_filters)
        maml = MAML(learner, inner_lr=config.inner_lr, inner_steps=inner_steps,
                    recompute=recompute, meta_batch_mode=config.meta_batch_mode)
        batch = {k: tf.cast(v, "float64") if v.dtype.is_floating else v
                 for k, v in episode(config).items()}
        _, grads, _ = tf.function(maml.train_gradients)(batch, config.meta_batch_size)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return [g.numpy() for g in grads]


def summarize(rows: list[dict]) -> dict:
    """Least-squares slopes of every memory figure against inner steps, per recompute flag."""
    figures = ["peak_mb", "step_mb"] + (["tf_allocator_peak_mb"]
                                        if "tf_allocator_peak_mb" in rows[0] else [])
    slopes = {}
    for recompute in (False, True):
        selected = [r for r in rows if r["recompute"] == recompute]
        steps = [r["inner_steps"] for r in selected]
        slopes[f"recompute_{recompute}".lower()] = {
            f"{name}_per_inner_step": slope(steps, [r[name] for r in selected])
            for name in figures}
    plain, recomputed = slopes["recompute_false"], slopes["recompute_true"]
    return {
        "slopes": slopes,
        "slope_ratio_recompute_over_plain": {
            name: recomputed[name] / plain[name] for name in plain},
        "recompute_reduces_peak_mb_slope": bool(
            recomputed["peak_mb_per_inner_step"] < plain["peak_mb_per_inner_step"]),
    }


def gradient_check(float32_diffs: dict[int, float], float64_diffs: dict[int, float]) -> dict:
    """Recompute vs plain meta-gradients: float32 (measured runs) and float64 (the verdict)."""
    return {
        "float32_rel_diff": {str(k): v for k, v in float32_diffs.items()},
        "float64_rel_diff": {str(k): v for k, v in float64_diffs.items()},
        "float64_tolerance": FLOAT64_TOLERANCE,
        "same_meta_gradient": all(v <= FLOAT64_TOLERANCE for v in float64_diffs.values()),
        "note": "float32 gradients of this model differ from float64 by up to a few percent "
        "(sums over ~10^5 terms with cancellation), for plain and recomputed steps alike, so "
        "equality is checked in float64 (with float64_filters filters)",
    }


def run_benchmark(config: MemoryConfig) -> dict:
    """Measures every configuration in its own process; returns the report (JSON-ready)."""
    machine = machine_info()
    rows, float32_diffs, float64_diffs = [], {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for inner_steps in config.inner_steps:
            grads = {}
            for recompute in (False, True):
                path = os.path.join(directory, f"grads_{inner_steps}_{recompute}.npz")
                rows.append(run_child(config, inner_steps, recompute, path))
                with np.load(path) as saved:
                    grads[recompute] = [saved[k] for k in saved.files]
            float32_diffs[inner_steps] = rel_diff(grads[True], grads[False])
    for inner_steps in config.inner_steps:
        recomputed, plain = (float64_meta_gradients(config, inner_steps, recompute)
                             for recompute in (True, False))
        float64_diffs[inner_steps] = rel_diff(recomputed, plain)
    return {"config": dataclasses.asdict(config), "measurements": rows, **summarize(rows),
            "meta_gradient_check": gradient_check(float32_diffs, float64_diffs),
            "machine": {**machine, "load_average_at_end": os.getloadavg()}}


def main(argv) -> None:
    del argv
    tf.config.threading.set_intra_op_parallelism_threads(len(os.sched_getaffinity(0)))
    if FLAGS.child is not None:
        child = json.loads(FLAGS.child)
        config = MemoryConfig(**{**child["config"],
                                 "inner_steps": tuple(child["config"]["inner_steps"])})
        print(json.dumps(measure_configuration(config, child["inner_steps"],
                                               child["recompute"], FLAGS.grads_path)))
        return
    config = QUICK if FLAGS.quick else MemoryConfig(
        inner_steps=tuple(int(s) for s in FLAGS.inner_steps),
        meta_batch_size=FLAGS.meta_batch_size, tf_allocator_stats=FLAGS.tf_allocator_stats)
    print(json.dumps({"benchmark": "maml_memory", **run_benchmark(config)}, indent=1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
