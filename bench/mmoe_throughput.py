"""MMoE training throughput against an fp32 GEMM and against PyTorch, measured in one run.

A YouTube-scale MMoE (Ma et al., KDD 2018, https://dl.acm.org/doi/10.1145/3219819.3220007):
512-d input, 8 experts of widths (512, 256), 4 binary tasks with (64,) towers, batch 1024,
built from `tf_mtml.layers.MMoE` + `TaskTowers` in a functional model and trained with a custom
`tf.function` step (GradientTape + Adam), in float32 and `mixed_bfloat16`, with and without
XLA. Beside it, in the same process and interleaved repeat by repeat (so that load from other
processes hits every contender alike): the GEMM `(batch, d) x (d, experts * units[0])` in TF
and PyTorch, and the same model in PyTorch (fp32 and bf16 autocast) from the same initial
weights, with the same optimizer, on the same data. `ours_proposed` is a local copy of MMoE
with the change proposed for `tf_mtml/layers/mmoe.py` (see `ExpertMajorMMoE`).

    .venv/bin/python -m bench.mmoe_throughput [--steps=20] [--repeats=5] [--batch_size=1024]
    .venv/bin/python -m bench.mmoe_throughput --quick  # toy sizes, seconds

Prints one JSON object (figures, FLOP formula, machine, whether each target is met).
Expected runtime on 2 cores: about 5 minutes (full), 15 seconds (`--quick`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from keras import ops

from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import TaskTowers

FLAGS = flags.FLAGS

# The targets: (figure, comparison, threshold).
TARGETS = {
    "fp32_vs_torch_fp32": (">=", 0.95),
    "fp32_fraction_of_fp32_gemm": (">=", 0.85),
    "bf16_vs_fp32": (">=", 1.6),
    "bf16_vs_torch_bf16": (">=", 1.0),
    "bf16_final_loss_rel_diff": ("<=", 0.01),
}


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Model size and measurement schedule."""

    batch_size: int = 1024
    input_dim: int = 512
    num_experts: int = 8
    expert_units: tuple[int, ...] = (512, 256)
    num_tasks: int = 4
    tower_units: tuple[int, ...] = (64,)
    steps: int = 20
    repeats: int = 5
    warmup_steps: int = 5
    loss_steps: int = 200
    num_batches: int = 8
    learning_rate: float = 1e-3
    seed: int = 0


QUICK = BenchConfig(
    batch_size=32, input_dim=16, num_experts=2, expert_units=(8, 4), num_tasks=2,
    tower_units=(4,), steps=2, repeats=2, warmup_steps=1, loss_steps=3, num_batches=2,
)


def define_flags() -> None:
    flags.DEFINE_integer("steps", BenchConfig.steps, "Timed training steps per repeat.")
    flags.DEFINE_integer("repeats", BenchConfig.repeats, "Timed repeats; medians are reported.")
    flags.DEFINE_integer("batch_size", BenchConfig.batch_size, "Examples per step.")
    flags.DEFINE_bool("quick", False, "Toy sizes and schedule (a smoke run of a few seconds).")


# ----------------------------------------------------------------------------- FLOPs


def flop_counts(config: BenchConfig) -> dict:
    """Analytic FLOPs (2 per multiply-add) of every matmul: experts, gates, mixing, towers."""
    e, d, t = config.num_experts, config.input_dim, config.num_tasks
    widths = (d, *config.expert_units)
    towers = (widths[-1], *config.tower_units, 1)
    experts = sum(2 * e * a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    gates = 2 * d * t * e
    mixing = 2 * t * e * widths[-1]
    tower_flops = t * sum(2 * a * b for a, b in zip(towers[:-1], towers[1:], strict=True))
    forward = experts + gates + mixing + tower_flops
    # The matmuls that read the input need no input gradient, so they run 2x, not 3x.
    exact = 3 * forward - (2 * e * d * widths[1] + gates)
    return {
        "formula": "forward/example = experts 2*E*sum(u_i*u_{i+1}, u_0=d) + gates 2*d*T*E"
        " + mixing 2*T*E*u_last + towers T*2*sum(w_j*w_{j+1}, w_0=u_last, w_last=1);"
        " training = 3 * forward (issue convention, used for every GFLOP/s and fraction);"
        " training_exact = 3 * forward - 2*E*d*u_1 - 2*d*T*E (no gradient w.r.t. the input)",
        "forward_per_example": forward,
        "forward_breakdown": {
            "experts": experts, "gates": gates, "mixing": mixing, "towers": tower_flops,
        },
        "training_per_example": 3 * forward,
        "training_exact_per_example": exact,
        "training_per_step": 3 * forward * config.batch_size,
    }


# ----------------------------------------------------------------------------- data


@dataclasses.dataclass(frozen=True)
class Data:
    """`num_batches` fixed batches: `x (n, batch, d)`, binary labels `y (n, batch, tasks)`."""

    x: np.ndarray
    y: np.ndarray


def make_data(config: BenchConfig) -> Data:
    """Gaussian inputs; each task's label is a noisy linear teacher, so the loss can fall."""
    rng = np.random.default_rng(config.seed)
    shape = (config.num_batches, config.batch_size)
    x = rng.standard_normal((*shape, config.input_dim), dtype=np.float32)
    teacher = rng.standard_normal((config.input_dim, config.num_tasks), dtype=np.float32)
    scores = x @ (teacher / np.sqrt(config.input_dim))
    noise = rng.standard_normal((*shape, config.num_tasks), dtype=np.float32)
    return Data(x=x, y=(scores + 0.5 * noise > 0).astype(np.float32))


# ----------------------------------------------------------------------------- ours (Keras)


@keras.saving.register_keras_serializable(package="tf_mtml_bench")
class ExpertMajorMMoE(MMoE):
    """MMoE with the change proposed for `tf_mtml/layers/mmoe.py`, same weights and outputs.

    `MMoE._expert_outputs` runs the deeper expert layers as `einsum("beu,euv->bev")`, which TF
    lowers to `_MklEinsum`; that kernel and its two gradient einsums are the slowest ops of the
    step (see the report). Here the hidden activations are transposed once to expert-major
    `(E, batch, u)`, the deeper layers are plain batched matmuls `(E, batch, u) x (E, u, v)`
    (oneDNN batched GEMM), and one transpose back gives the `(batch, E, v)` the mixing expects.
    """

    def _expert_outputs(self, x):
        kernel, bias = self.expert_kernels[0], self.expert_biases[0]
        input_dim, num_experts, units = kernel.shape
        h = ops.matmul(x, ops.reshape(kernel, (input_dim, num_experts * units)))
        h = self.expert_activation(h + ops.reshape(bias, (num_experts * units,)))
        h = ops.transpose(ops.reshape(h, (-1, num_experts, units)), (1, 0, 2))
        for kernel, bias in zip(self.expert_kernels[1:], self.expert_biases[1:], strict=True):
            h = self.expert_activation(ops.matmul(h, kernel) + bias[:, None, :])
        return ops.transpose(h, (1, 0, 2))


def build_keras_model(config: BenchConfig, policy: str, mmoe_cls: type = MMoE) -> keras.Model:
    """`x (batch, d)` -> `{task{k}: (batch, 1)}` logits, computed under `policy`."""
    inputs = keras.Input((config.input_dim,), name="x")
    mmoe = mmoe_cls(
        num_experts=config.num_experts, expert_units=config.expert_units,
        num_tasks=config.num_tasks, dtype=policy, name="mmoe",
    )
    tasks = {f"task{k}": 1 for k in range(config.num_tasks)}
    outputs = TaskTowers(tasks, config.tower_units, dtype=policy, name="towers")(mmoe(inputs))
    return keras.Model(inputs, outputs)


def _keras_loss(model: keras.Model, x, y, training: bool):
    outputs = model(x, training=training)
    logits = tf.concat([outputs[f"task{k}"] for k in range(y.shape[-1])], axis=-1)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logits))


def make_keras_step(model: keras.Model, optimizer: keras.Optimizer, jit_compile: bool):
    """The custom training step: GradientTape + `optimizer.apply`, one `tf.function`."""

    @tf.function(jit_compile=jit_compile)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = _keras_loss(model, x, y, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return step


class Trainer:
    """A contender: `run(n)` trains `n` steps (cycling the batches) and waits for the result."""

    def __init__(self, step: Callable, forward_loss: Callable, batches: list, to_float: Callable):
        self._step, self._forward_loss, self._to_float = step, forward_loss, to_float
        self._batches = batches
        self._count = 0

    def run(self, num_steps: int) -> float:
        loss = None
        for _ in range(num_steps):
            loss = self._step(*self._batches[self._count % len(self._batches)])
            self._count += 1
        return self._to_float(loss)

    def training_set_loss(self) -> float:
        """Mean loss over every batch, inference mode: the final training loss."""
        return float(np.mean([self._to_float(self._forward_loss(*b)) for b in self._batches]))


def keras_trainer(config, data, init_weights, policy, jit_compile, mmoe_cls=MMoE) -> Trainer:
    model = build_keras_model(config, policy, mmoe_cls)
    model.set_weights(init_weights)
    optimizer = keras.optimizers.Adam(config.learning_rate)
    optimizer.build(model.trainable_variables)
    forward_loss = tf.function(lambda x, y: _keras_loss(model, x, y, training=False))
    batches = [(tf.constant(x), tf.constant(y)) for x, y in zip(data.x, data.y, strict=True)]
    step = make_keras_step(model, optimizer, jit_compile)
    return Trainer(step, forward_loss, batches, lambda t: float(t.numpy()))


# ----------------------------------------------------------------------------- PyTorch peer


def torch_model(config: BenchConfig, keras_model: keras.Model):
    """The same architecture in PyTorch, holding copies of `keras_model`'s weights."""
    import torch

    class TorchMMoE(torch.nn.Module):
        """Same fused layout as `MMoE`: one GEMM for expert layer 0, bmm for deeper layers."""

        def __init__(self):
            super().__init__()
            mmoe = keras_model.get_layer("mmoe")
            towers = keras_model.get_layer("towers")

            def param(variable, shape=None):
                value = np.asarray(variable.numpy())
                value = value.reshape(shape) if shape else value
                return torch.nn.Parameter(torch.from_numpy(value.copy()))

            e, units = config.num_experts, config.expert_units
            self.kernels = torch.nn.ParameterList(
                [param(mmoe.expert_kernels[0], (config.input_dim, e * units[0]))]
                + [param(k) for k in mmoe.expert_kernels[1:]]
            )
            self.biases = torch.nn.ParameterList(
                [param(mmoe.expert_biases[0], (e * units[0],))]
                + [param(b) for b in mmoe.expert_biases[1:]]
            )
            self.gate_kernel = param(mmoe.gate_kernel, (config.input_dim, -1))
            self.gate_bias = param(mmoe.gate_bias, (-1,))
            self.towers = torch.nn.ModuleList(
                torch.nn.ModuleList(_torch_dense(layer) for layer in tower.dense_layers)
                for tower in towers.towers
            )
            self.heads = torch.nn.ModuleList(_torch_dense(head) for head in towers.heads)

        def forward(self, x):
            e, t = config.num_experts, config.num_tasks
            with torch.autocast("cpu", enabled=False):  # float32 gates, as in MMoE
                gates = torch.softmax(torch.addmm(self.gate_bias, x, self.gate_kernel)
                                      .view(-1, t, e), dim=-1)
            h = torch.relu(torch.addmm(self.biases[0], x, self.kernels[0]))
            h = h.view(-1, e, config.expert_units[0]).transpose(0, 1)
            for kernel, bias in zip(self.kernels[1:], self.biases[1:], strict=True):
                h = torch.relu(torch.baddbmm(bias[:, None, :], h, kernel))
            mixed = torch.bmm(gates.to(h.dtype), h.transpose(0, 1))
            return torch.cat([self._tower(k, mixed[:, k]) for k in range(t)], dim=-1)

        def _tower(self, k, h):
            for dense in self.towers[k]:
                h = torch.relu(dense(h))
            with torch.autocast("cpu", enabled=False):  # float32 heads, as in TaskTowers
                return self.heads[k](h.float())

    return TorchMMoE()


def _torch_dense(layer: keras.layers.Dense):
    import torch

    dense = torch.nn.Linear(*layer.kernel.shape)
    with torch.no_grad():
        dense.weight.copy_(torch.from_numpy(np.asarray(layer.kernel.numpy()).T.copy()))
        dense.bias.copy_(torch.from_numpy(np.asarray(layer.bias.numpy())))
    return dense


def torch_trainer(config, data, init_weights, bf16: bool) -> Trainer:
    import torch

    reference = build_keras_model(config, "float32")
    reference.set_weights(init_weights)
    model = torch_model(config, reference)
    # Keras Adam's default epsilon; everything else is torch's default Adam.
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, eps=1e-7)
    criterion = torch.nn.BCEWithLogitsLoss()

    def forward_loss(x, y):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return criterion(model(x), y)

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        loss = forward_loss(x, y)
        loss.backward()
        optimizer.step()
        return loss

    def no_grad_loss(x, y):
        with torch.no_grad():
            return forward_loss(x, y)

    batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(data.x, data.y,
                                                                          strict=True)]
    return Trainer(step, no_grad_loss, batches, lambda t: float(t.item()))


# ----------------------------------------------------------------------------- GEMMs


def gemm_shape(config: BenchConfig) -> tuple[int, int, int]:
    """Expert layer 0 of the model: `(batch, d) x (d, experts * units[0])`."""
    return config.batch_size, config.input_dim, config.num_experts * config.expert_units[0]


def tf_gemm(config: BenchConfig, dtype: str, jit_compile: bool) -> Callable[[int], float]:
    m, k, n = gemm_shape(config)
    rng = np.random.default_rng(config.seed)
    # Arguments, not captured constants: grappler would fold a constant matmul away.
    a = tf.cast(rng.standard_normal((m, k), dtype=np.float32), dtype)
    b = tf.cast(rng.standard_normal((k, n), dtype=np.float32), dtype)
    matmul = tf.function(tf.matmul, jit_compile=jit_compile)

    def run(num_calls):
        for _ in range(num_calls):
            c = matmul(a, b)
        return float(c[0, 0])

    return run


def torch_gemm(config: BenchConfig, bf16: bool) -> Callable[[int], float]:
    import torch

    m, k, n = gemm_shape(config)
    dtype = torch.bfloat16 if bf16 else torch.float32
    generator = torch.Generator().manual_seed(config.seed)
    a = torch.randn(m, k, generator=generator).to(dtype)
    b = torch.randn(k, n, generator=generator).to(dtype)

    def run(num_calls):
        for _ in range(num_calls):
            c = a @ b
        return float(c[0, 0])

    return run


# ----------------------------------------------------------------------------- measurement


def time_interleaved(runs: dict[str, Callable[[int], float]], config: BenchConfig) -> dict:
    """Median seconds per call of every `run`, repeats interleaved across contenders."""
    for run in runs.values():
        run(config.warmup_steps)
    seconds = {name: [] for name in runs}
    for _ in range(config.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(config.steps)
            seconds[name].append((time.perf_counter() - start) / config.steps)
    return {name: statistics.median(values) for name, values in seconds.items()}


def build_contenders(config: BenchConfig, data: Data, init_weights: list) -> dict:
    """`{name: run}`: GEMMs, ours and ours_proposed x {fp32, bf16} x {graph, XLA}, torch."""
    runs = {
        f"tf_gemm_{dtype}{'_xla' if jit else ''}": tf_gemm(config, dtype, jit)
        for dtype in ("float32", "bfloat16") for jit in (False, True)
    }
    runs |= {f"torch_gemm_{name}": torch_gemm(config, bf16)
             for name, bf16 in (("float32", False), ("bfloat16", True))}
    for prefix, mmoe_cls in (("ours", MMoE), ("ours_proposed", ExpertMajorMMoE)):
        for precision, policy in (("fp32", "float32"), ("bf16", "mixed_bfloat16")):
            for jit in (False, True):
                trainer = keras_trainer(config, data, init_weights, policy, jit, mmoe_cls)
                runs[f"{prefix}_{precision}{'_xla' if jit else ''}"] = trainer.run
    for precision, bf16 in (("fp32", False), ("bf16", True)):
        runs[f"torch_{precision}"] = torch_trainer(config, data, init_weights, bf16).run
    return runs


def throughput_figures(seconds: dict, config: BenchConfig, flops: dict) -> dict:
    """Per contender: ms/step (or ms/call), examples/s and achieved GFLOP/s."""
    m, k, n = gemm_shape(config)
    figures = {}
    for name, sec in seconds.items():
        if "gemm" in name:
            figures[name] = {"ms_per_call": sec * 1e3, "gflops": 2 * m * k * n / sec / 1e9}
            continue
        figures[name] = {
            "ms_per_step": sec * 1e3,
            "examples_per_s": config.batch_size / sec,
            "gflops": flops["training_per_step"] / sec / 1e9,
            "gflops_exact": flops["training_exact_per_example"] * config.batch_size / sec / 1e9,
        }
    return figures


def best_mode(figures: dict, prefix: str) -> str:
    """The faster of the graph and XLA steps of a contender."""
    return min((prefix, f"{prefix}_xla"), key=lambda name: figures[name]["ms_per_step"])


def final_loss(trainer: Trainer, config: BenchConfig) -> float:
    """Training-set loss after `loss_steps` steps (every trainer starts from the same init)."""
    trainer.run(config.loss_steps)
    return trainer.training_set_loss()


def keras_final_losses(config, data, init_weights, headline: dict, mmoe_cls) -> dict:
    """Final loss of the fp32 and bf16 headline steps, and their relative difference."""
    losses = {}
    for precision, policy in (("fp32", "float32"), ("bf16", "mixed_bfloat16")):
        jit = headline[precision].endswith("_xla")
        trainer = keras_trainer(config, data, init_weights, policy, jit, mmoe_cls)
        losses[precision] = final_loss(trainer, config)
    losses["bf16_rel_diff"] = abs(losses["bf16"] / losses["fp32"] - 1)
    return losses


def comparisons(figures: dict, headline: dict, gemm_fp32: str) -> dict:
    """The issue's ratios for one pair of (fp32, bf16) headline steps."""
    fp32, bf16 = figures[headline["fp32"]], figures[headline["bf16"]]
    return {
        "fp32_vs_torch_fp32": fp32["examples_per_s"] / figures["torch_fp32"]["examples_per_s"],
        "fp32_fraction_of_fp32_gemm": fp32["gflops"] / figures[gemm_fp32]["gflops"],
        "fp32_exact_fraction_of_fp32_gemm": fp32["gflops_exact"] / figures[gemm_fp32]["gflops"],
        "bf16_vs_fp32": bf16["examples_per_s"] / fp32["examples_per_s"],
        "bf16_vs_torch_bf16": bf16["examples_per_s"] / figures["torch_bf16"]["examples_per_s"],
        "bf16_fraction_of_bf16_gemm": bf16["gflops"] / figures["tf_gemm_bfloat16"]["gflops"],
        "torch_fp32_fraction_of_fp32_gemm": (
            figures["torch_fp32"]["gflops"] / figures[gemm_fp32]["gflops"]
        ),
    }


def check_targets(values: dict) -> dict:
    checks = {}
    for name, (comparison, threshold) in TARGETS.items():
        value = values[name]
        met = value >= threshold if comparison == ">=" else value <= threshold
        checks[name] = {"value": value, "target": f"{comparison} {threshold}", "met": bool(met)}
    return checks


# ----------------------------------------------------------------------------- report


def machine_info() -> dict:
    import torch

    cpu_model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu_model": cpu_model,
        "cores": len(os.sched_getaffinity(0)),
        "load_average_1_5_15_after": list(os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def run_benchmark(config: BenchConfig) -> dict:
    """Runs every measurement and returns the JSON-ready report."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load_before = list(os.getloadavg())
    keras.utils.set_random_seed(config.seed)
    data = make_data(config)
    init_weights = build_keras_model(config, "float32").get_weights()
    flops = flop_counts(config)
    seconds = time_interleaved(build_contenders(config, data, init_weights), config)
    figures = throughput_figures(seconds, config, flops)
    gemm_fp32 = max(("tf_gemm_float32", "tf_gemm_float32_xla"),
                    key=lambda name: figures[name]["gflops"])
    report = {
        "config": dataclasses.asdict(config), "flops": flops, "throughput": figures,
        "fp32_gemm_reference": gemm_fp32,
        "gemm_bf16_vs_fp32": figures["tf_gemm_bfloat16"]["gflops"] / figures[gemm_fp32]["gflops"],
        "torch_final_losses": {
            precision: final_loss(torch_trainer(config, data, init_weights, bf16), config)
            for precision, bf16 in (("fp32", False), ("bf16", True))
        },
    }
    for prefix, mmoe_cls in (("ours", MMoE), ("ours_proposed", ExpertMajorMMoE)):
        headline = {p: best_mode(figures, f"{prefix}_{p}") for p in ("fp32", "bf16")}
        values = comparisons(figures, headline, gemm_fp32)
        losses = keras_final_losses(config, data, init_weights, headline, mmoe_cls)
        values["bf16_final_loss_rel_diff"] = losses["bf16_rel_diff"]
        report[prefix] = {"headline_steps": headline, "comparisons": values,
                          "final_losses": losses, "targets": check_targets(values)}
    report["machine"] = {**machine_info(), "load_average_1_5_15_before": load_before}
    return report


def main(argv) -> None:
    del argv
    config = QUICK if FLAGS.quick else BenchConfig(
        steps=FLAGS.steps, repeats=FLAGS.repeats, batch_size=FLAGS.batch_size
    )
    print(json.dumps({"benchmark": "mmoe_throughput", **run_benchmark(config)}, indent=1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
