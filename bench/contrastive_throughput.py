"""SimCLR training throughput against PyTorch: same encoder, batch, loss and optimizer.

Ours is the training step of the `simclr_digits` task (`ContrastiveTask.train_step`: both
views through `EmbeddingModel` in one call, `nt_xent`, Adam), compiled with `tf.function`
and, as a second contender, with XLA. The PyTorch peer (torch 2.13, CPU) is the same
network written in PyTorch - Conv-4 (3x3 conv, BatchNorm with Keras's epsilon and momentum,
ReLU, 2x2 max-pool), the MLP projection head, NT-Xent from cosine similarities, Adam with
Keras's epsilon - started from a copy of our initial weights and fed the same batches, so
the two train the same model: the report carries both losses after the timed steps.
Augmentation is not timed (the views are precomputed); each step sees `2 x batch_size`
images. Repeats are interleaved across contenders and medians reported, so load from other
processes hits all alike.

    .venv/bin/python -m bench.contrastive_throughput [--steps=20] [--repeats=5] \\
        [--batch_size=256] [--size=digits|omniglot]
    .venv/bin/python -m bench.contrastive_throughput --quick  # toy sizes, seconds

`--size=omniglot` times the `supcon_omniglot` encoder (28x28, 64 filters, 4 pools) with the
same NT-Xent step. PyTorch runs with as many threads as cores and with one thread; on a
loaded machine its OpenMP threads wait for each other and one thread can be several times
faster, so the headline ratio takes the faster of each side. Prints one JSON object:
images/s of every contender, the headline ratio, the loss check and the machine.

Measured (TF 2.21 / Keras 3.15 / torch 2.13 CPU, 2 cores shared with other jobs, load
average 8-11, so read the ratios loosely):

    digits (defaults, 20 steps x 5 repeats):  ours 35 ms/step (14,550 images/s), ours_xla
        97 ms, torch 689 ms (2 threads) / 113 ms (1 thread): ours / torch = 3.2
    omniglot (--size=omniglot --steps=5 --repeats=3):  ours 2.14 s/step (240 images/s),
        ours_xla 3.71 s, torch 3.99 s (2 threads) / 1.98 s (1 thread): ours / torch = 0.93

All contenders start from the same loss (6.2679 digits, 6.3374 Omniglot) and stay within
0.5% after the timed steps. XLA does not help these small convolutions on CPU. Expected
runtime: about 1 minute for the digits defaults, 3 minutes for the Omniglot line above.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from tf_mtml.configs.contrastive_experiments import simclr_digits
from tf_mtml.meta.backbones import conv4
from tf_mtml.models.embedding import EmbeddingModel
from tf_mtml.tasks.contrastive import LABELS, VIEWS, ContrastiveTask

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Model size and measurement schedule (defaults: `simclr_digits`)."""

    batch_size: int = 256
    image_size: int = 8
    filters: int = 32
    pool_blocks: int = 3
    projection_units: tuple[int, ...] = (128, 64)
    temperature: float = 0.5
    learning_rate: float = 1e-3
    steps: int = 20
    repeats: int = 5
    warmup_steps: int = 3
    num_batches: int = 4
    seed: int = 0


SIZES = {"digits": {}, "omniglot": {"image_size": 28, "filters": 64, "pool_blocks": 4,
                                    "temperature": 0.1}}
QUICK = BenchConfig(batch_size=16, filters=8, projection_units=(16, 8), steps=2, repeats=2,
                    warmup_steps=1, num_batches=2)


def define_flags() -> None:
    flags.DEFINE_integer("steps", BenchConfig.steps, "Timed training steps per repeat.")
    flags.DEFINE_integer("repeats", BenchConfig.repeats, "Timed repeats; medians are reported.")
    flags.DEFINE_integer("batch_size", BenchConfig.batch_size, "Examples per step (x2 views).")
    flags.DEFINE_enum("size", "digits", list(SIZES), "Encoder and image size.")
    flags.DEFINE_bool("quick", False, "Toy sizes and schedule: a smoke run of a few seconds.")


def make_batches(config: BenchConfig) -> list[np.ndarray]:
    """`num_batches` fixed batches of views `(batch, 2, size, size, 1)` in `[0, 1]`."""
    rng = np.random.default_rng(config.seed)
    shape = (config.batch_size, 2, config.image_size, config.image_size, 1)
    return [rng.uniform(size=shape).astype(np.float32) for _ in range(config.num_batches)]


def build_keras_model(config: BenchConfig) -> EmbeddingModel:
    keras.utils.set_random_seed(config.seed)
    shape = (config.image_size, config.image_size, 1)
    return EmbeddingModel(conv4(shape, config.filters, pool_blocks=config.pool_blocks),
                          config.projection_units)


def _task(config: BenchConfig) -> ContrastiveTask:
    experiment = simclr_digits().task
    experiment.override({"data": {"global_batch_size": config.batch_size},
                         "model": {"temperature": config.temperature}})
    return ContrastiveTask(experiment)


def keras_trainer(config: BenchConfig, batches: list, jit_compile: bool):
    """`run(n) -> last loss` training ours with the task's own train step."""
    model = build_keras_model(config)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(model.trainable_variables)
    metric = keras.metrics.Mean()
    task = _task(config)
    inputs = [{VIEWS: tf.constant(b), LABELS: tf.zeros(len(b), tf.int32)} for b in batches]

    @tf.function(jit_compile=jit_compile)
    def step(batch):
        metric.reset_state()
        task.train_step(batch, model, optimizer, metric)
        return metric.result()

    count = [0]

    def run(num_steps: int) -> float:
        loss = None
        for _ in range(num_steps):
            loss = step(inputs[count[0] % len(inputs)])
            count[0] += 1
        return float(loss)

    return run


def torch_trainer(config: BenchConfig, batches: list, num_threads: int):
    """The same model in PyTorch from our initial weights: `run(n) -> last loss`.

    `num_threads` is set before every run: on a loaded machine PyTorch's OpenMP threads
    wait for each other, and one thread can beat two several times over.
    """
    import torch

    reference = build_keras_model(config)
    layers = []
    in_channels = 1
    for i in range(4):
        conv = torch.nn.Conv2d(in_channels, config.filters, 3, padding=1)
        bn = torch.nn.BatchNorm2d(config.filters, eps=1e-3, momentum=0.01)
        kernel, bias = (keras.ops.convert_to_numpy(v) for v in
                        reference.encoder.get_layer(f"conv{i}").weights)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
            conv.bias.copy_(torch.from_numpy(bias))
        layers += [conv, bn, torch.nn.ReLU()]
        if i < config.pool_blocks:
            layers.append(torch.nn.MaxPool2d(2))
        in_channels = config.filters
    layers.append(torch.nn.Flatten())
    dense = [*reference.hidden.dense_layers, reference.projection]
    widths = [reference.embedding_dim, *config.projection_units]
    for j, layer in enumerate(dense):
        linear = torch.nn.Linear(widths[j], widths[j + 1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(keras.ops.convert_to_numpy(layer.kernel).T))
            linear.bias.copy_(torch.from_numpy(keras.ops.convert_to_numpy(layer.bias)))
        layers += [linear] + ([torch.nn.ReLU()] if j < len(dense) - 1 else [])
    net = torch.nn.Sequential(*layers)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate, eps=1e-7)
    # NCHW, both views of the batch stacked view-major, as ours.
    inputs = [torch.from_numpy(np.concatenate([b[:, 0], b[:, 1]]).transpose(0, 3, 1, 2).copy())
              for b in batches]
    n = 2 * config.batch_size
    targets = torch.cat([torch.arange(n // 2, n), torch.arange(0, n // 2)])
    self_mask = torch.eye(n, dtype=torch.bool)

    def step(images):
        optimizer.zero_grad(set_to_none=True)
        z = torch.nn.functional.normalize(net(images), dim=1)
        logits = (z @ z.T / config.temperature).masked_fill(self_mask, float("-inf"))
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        optimizer.step()
        return loss

    count = [0]

    def run(num_steps: int) -> float:
        torch.set_num_threads(num_threads)
        loss = None
        for _ in range(num_steps):
            loss = step(inputs[count[0] % len(inputs)])
            count[0] += 1
        return float(loss.item())

    return run


def time_interleaved(runs: dict, config: BenchConfig) -> tuple[dict, dict]:
    """Median seconds per step of every contender, and each one's first and last loss.

    The first step's loss is computed from the shared initial weights and first batch, so
    every contender must report the same value.
    """
    losses = {name: {"first_step": run(1)} for name, run in runs.items()}
    for run in runs.values():
        run(config.warmup_steps)
    seconds = {name: [] for name in runs}
    for _ in range(config.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            losses[name]["last_step"] = run(config.steps)
            seconds[name].append((time.perf_counter() - start) / config.steps)
    return {name: statistics.median(values) for name, values in seconds.items()}, losses


def run_benchmark(config: BenchConfig) -> dict:
    import torch

    cores = len(os.sched_getaffinity(0))
    load_before = os.getloadavg()
    batches = make_batches(config)
    runs = {"ours": keras_trainer(config, batches, jit_compile=False),
            "ours_xla": keras_trainer(config, batches, jit_compile=True),
            "torch": torch_trainer(config, batches, num_threads=cores),
            "torch_1_thread": torch_trainer(config, batches, num_threads=1)}
    seconds, losses = time_interleaved(runs, config)
    images = 2 * config.batch_size
    throughput = {name: {"ms_per_step": sec * 1e3, "images_per_s": images / sec}
                  for name, sec in seconds.items()}
    ours = max(("ours", "ours_xla"), key=lambda name: throughput[name]["images_per_s"])
    peer = max(("torch", "torch_1_thread"), key=lambda name: throughput[name]["images_per_s"])
    return {
        "benchmark": "contrastive_throughput",
        "config": dataclasses.asdict(config),
        "throughput": throughput,
        # The headline ratio: the faster of ours over the faster PyTorch thread setting.
        "ours_vs_torch": throughput[ours]["images_per_s"] / throughput[peer]["images_per_s"],
        "headline": {"ours": ours, "torch": peer},
        # Same initial weights, batches and optimizer: equal first-step losses; the last ones
        # drift apart only by float32 round-off amplified over the steps.
        "losses": losses,
        "machine": {
            "cores": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "torch": torch.__version__,
            "load_average_1_5_15_before": load_before,
            "load_average_1_5_15_after": os.getloadavg(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        },
    }


def main(argv) -> None:
    del argv
    tf.get_logger().setLevel("ERROR")  # Each contender traces its own step: not a retrace.
    if FLAGS.quick:
        config = QUICK
    else:
        config = BenchConfig(steps=FLAGS.steps, repeats=FLAGS.repeats,
                             batch_size=FLAGS.batch_size, **SIZES[FLAGS.size])
    print(json.dumps(run_benchmark(config), indent=1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
