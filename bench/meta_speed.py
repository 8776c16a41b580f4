"""Meta-learning step time against PyTorch `torch.func` and a GEMM, measured in one run.

Two workloads of the meta-learning literature, each trained by a full step (forward, inner
loop where there is one, outer gradient, Adam) from the same initial weights on the same
episodes in TF and in PyTorch, repeats interleaved across contenders so that load from other
processes hits all of them alike:

- `maml_sinusoid`: second-order MAML (Finn et al. 2017, https://arxiv.org/abs/1703.03400) on
  sinusoid regression, 25 tasks of K=10 support and 10 query points, one inner step, the
  `1 -> 40 -> 40 -> 1` ReLU MLP. Ours: `tf_mtml.meta.MAML` in a `tf.function` with each
  `meta_batch_mode` (`map_fn` also under XLA; `vectorized_map` never is). PyTorch:
  functional MAML with `torch.func.vmap` over tasks of `torch.func.grad` (the inner step,
  differentiable: `create_graph` semantics) and the outer gradient by autograd
  (`torch_vmap`) or by `torch.func.grad` (`torch_vmap_func_grad`); a per-task loop of
  `torch.autograd.grad(create_graph=True)` (`torch_loop`) is shown for reference.
- `protonet_*`: Prototypical Networks (Snell et al. 2017, https://arxiv.org/abs/1703.05175)
  with the Conv-4 encoder on 28x28 images, one episode per step: 60-way 5-shot 5-query (the
  paper's Omniglot training episodes) and 5-way 1-shot 15-query. Ours:
  `PrototypicalNetwork(conv4())` in a `tf.function`, with and without XLA; PyTorch: the
  standard `nn.Sequential` Conv-4 (NCHW). `ours_fused_bn` is Conv-4 with the change proposed
  for `tf_mtml/meta/backbones.py` (see `FusedBatchNormalization`).

Each workload also times a GEMM shaped like its dominant matmul (TF graph and XLA, PyTorch):
the hidden layer `(B*(K+Q), 40) x (40, 40)` for MAML, and the im2col form of Conv-4's second
convolution `(images * 14 * 14, 9 * 64) x (9 * 64, 64)` for ProtoNet.

    .venv/bin/python -m bench.meta_speed [--repeats=5]
    .venv/bin/python -m bench.meta_speed --quick  # toy sizes, about 30 s

Prints one JSON object: every figure, the FLOP formulas, the first-step loss and gradient
agreement between frameworks, the machine and its load, and whether each of the issue's
targets is met. Runtime on 2 cores: 3 minutes, up to 6 while other jobs load them
(`--quick`: 30-80 s). PyTorch is also timed on one thread (`*_1_thread`) and the faster of
its runs is the reference: on loaded cores its OpenMP barriers stall whenever one of its two
threads is descheduled (up to 100x slower). Measured so (load ~7, TF 2.21, torch 2.13):
MAML 1.6 ms (map_fn + XLA) vs 2.4 ms (vmap, 1 thread): 0.64x, target not met; ProtoNet
60-way 0.94 s vs 1.07 s (0.88x), 5-way 99 ms vs 98 ms (1.0x), 26% and 43% of the GEMM rate:
not met; with fused BatchNorm 0.41x and 0.62x, 56% and 69%.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags
from keras import ops

from bench._common import machine_info
from tf_mtml.data.episodes import episode_dataset
from tf_mtml.data.labelled import ClassIndexedData
from tf_mtml.data.sinusoid import sinusoid_episode_dataset
from tf_mtml.meta.backbones import conv4, mlp_regressor
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y
from tf_mtml.meta.maml import MAML
from tf_mtml.meta.prototypical import PrototypicalNetwork

FLAGS = flags.FLAGS
EPISODE_KEYS = (SUPPORT_X, SUPPORT_Y, QUERY_X, QUERY_Y)
# The targets per workload: {figure: (comparison, threshold)}.
TARGETS = {
    "maml": {"time_vs_torch_vmap": ("<=", 0.33), "first_call_s": ("<=", 5.0)},
    "protonet": {"time_vs_torch": ("<=", 0.5), "fraction_of_gemm": (">=", 0.6),
                 "first_call_s": ("<=", 5.0)},
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Timed steps per repeat, repeats (medians are reported), warm-up steps, batches cycled."""

    steps: int
    repeats: int = 5
    warmup_steps: int = 2
    num_batches: int = 2


@dataclasses.dataclass(frozen=True)
class MamlConfig:
    meta_batch_size: int = 25
    num_shots: int = 10
    num_queries: int = 10
    hidden: tuple[int, ...] = (40, 40)
    inner_lr: float = 0.01
    schedule: Schedule = Schedule(steps=20, warmup_steps=3, num_batches=4)


@dataclasses.dataclass(frozen=True)
class ProtoConfig:
    num_ways: int
    num_shots: int
    num_queries: int
    image_size: int = 28
    filters: int = 64
    schedule: Schedule = Schedule(steps=2)

    @property
    def name(self) -> str:
        return f"protonet_{self.num_ways}w{self.num_shots}s{self.num_queries}q"

    @property
    def num_images(self) -> int:
        return self.num_ways * (self.num_shots + self.num_queries)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    maml: MamlConfig = MamlConfig()
    protonets: tuple[ProtoConfig, ...] = (
        ProtoConfig(60, 5, 5, schedule=Schedule(steps=1, repeats=3, warmup_steps=1)),
        ProtoConfig(5, 1, 15, schedule=Schedule(steps=5, repeats=5)),
    )
    learning_rate: float = 1e-3
    seed: int = 0


QUICK = BenchConfig(
    maml=MamlConfig(meta_batch_size=3, num_shots=4, num_queries=3, hidden=(8,),
                    schedule=Schedule(steps=2, repeats=2, warmup_steps=1)),
    protonets=(ProtoConfig(3, 2, 1, image_size=16, filters=4,
                           schedule=Schedule(steps=2, repeats=2, warmup_steps=1)),),
)


def define_flags() -> None:
    flags.DEFINE_integer("repeats", None, "Timed repeats of every workload (default: its own).")
    flags.DEFINE_bool("quick", False, "Toy sizes and schedule: a smoke run.")


# ----------------------------------------------------------------------------- FLOPs


def maml_flops(config: MamlConfig) -> dict:
    widths = (1, *config.hidden, 1)
    forward = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))
    k, q, b = config.num_shots, config.num_queries, config.meta_batch_size
    per_task = 9 * forward * k + 3 * forward * q
    return {
        "formula": "F = 2*sum_i(w_i*w_{i+1}) per example (w = 1, hidden..., 1); per task and "
        "inner step: inner forward+backward 3*F*K, its reverse-mode derivative in the outer "
        "backward (second order) 2*3*F*K, query forward+backward 3*F*Q; step = B*(9*F*K + "
        "3*F*Q) for one inner step (elementwise ops and Adam not counted)",
        "forward_per_example": forward,
        "per_step": b * per_task,
    }


def protonet_flops(config: ProtoConfig) -> dict:
    sides, channels = [config.image_size], [1] + [config.filters] * 4
    for _ in range(3):
        sides.append(sides[-1] // 2)
    convs = [2 * s * s * 9 * c_in * c_out
             for s, c_in, c_out in zip(sides, channels[:-1], channels[1:], strict=True)]
    forward = sum(convs)
    num_query = config.num_ways * config.num_queries
    distances = 2 * num_query * config.num_ways * config.filters * (sides[-1] // 2) ** 2
    step = 3 * forward * config.num_images + 3 * distances
    return {
        "formula": "conv_i = 2*s_i^2*9*c_in*c_out per image (s = 28, 14, 7, 3); step = "
        "3*(images*sum_i conv_i + 2*N*Q*N*d) (training = 3x forward, the convention of "
        "bench/mmoe_throughput.py; BatchNorm, ReLU, pooling and Adam not counted); "
        "step_exact drops the input gradient of the first convolution",
        "conv_forward_per_image": convs,
        "per_step": step,
        "per_step_exact": step - config.num_images * convs[0],
    }


# ----------------------------------------------------------------------------- data


def maml_batches(config: MamlConfig, seed: int) -> list[dict]:
    """Sinusoid meta-batches from the library's pipeline, as numpy."""
    count = config.schedule.num_batches
    dataset = sinusoid_episode_dataset(config.num_shots, config.num_queries,
                                       config.meta_batch_size, seed=seed,
                                       num_episodes=count * config.meta_batch_size)
    return [{k: v.numpy() for k, v in b.items() if k in EPISODE_KEYS} for b in dataset]


def protonet_batches(config: ProtoConfig, seed: int) -> list[dict]:
    """Single episodes (meta-batch 1) of random images from the library's episode pipeline."""
    per_class = 2 * (config.num_shots + config.num_queries)
    rng = np.random.default_rng(seed)
    images = rng.random((config.num_ways * per_class, config.image_size, config.image_size, 1),
                        dtype=np.float32)
    data = ClassIndexedData(images, np.repeat(np.arange(config.num_ways), per_class))
    dataset = episode_dataset(data, config.num_ways, config.num_shots, config.num_queries,
                              meta_batch_size=1, seed=seed,
                              num_episodes=config.schedule.num_batches)
    return [{k: v.numpy() for k, v in b.items()} for b in dataset]


# ----------------------------------------------------------------------------- contenders


class Contender:
    """A training step on fixed batches: first call timed alone, then `run(n)` cycles them.

    `on_run` is called before every call and run (PyTorch's thread count, set per contender).
    """

    def __init__(self, step: Callable, batches: list, to_float: Callable,
                 on_run: Callable[[], None] = lambda: None):
        self._step, self._batches, self._to_float = step, batches, to_float
        self._on_run = on_run
        self._count = 0

    def first_call(self) -> tuple[float, float]:
        """Seconds of the first step (trace and compile included) and its loss."""
        start = time.perf_counter()
        loss = self.run(1)
        return time.perf_counter() - start, loss

    def run(self, num_steps: int) -> float:
        self._on_run()
        loss = None
        for _ in range(num_steps):
            loss = self._step(*self._batches[self._count % len(self._batches)])
            self._count += 1
        return self._to_float(loss)


def tf_contender(model: keras.Model, batches: list[dict], global_batch_size: int,
                 learning_rate: float, jit_compile: bool) -> Contender:
    """`model.train_gradients` + Adam in one `tf.function`."""
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)

    @tf.function(jit_compile=jit_compile)
    def step(episode):
        loss, grads, _ = model.train_gradients(episode, global_batch_size)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    tensors = [({k: tf.constant(v) for k, v in b.items()},) for b in batches]
    return Contender(step, tensors, lambda t: float(t.numpy()))


def torch_contender(params: list, loss_fn: Callable, batches: list, learning_rate: float,
                    grad_fn: Callable | None = None, num_threads: int | None = None) -> Contender:
    """Adam (Keras's epsilon) on `params`; gradients by autograd unless `grad_fn` is given.

    Runs on `num_threads` threads, by default every core of the process.
    """
    import torch

    num_threads = num_threads or len(os.sched_getaffinity(0))

    optimizer = torch.optim.Adam(params, lr=learning_rate, eps=1e-7)

    def step(*batch):
        optimizer.zero_grad(set_to_none=True)
        if grad_fn is None:
            loss = loss_fn(params, *batch)
            loss.backward()
        else:
            grads, loss = grad_fn(params, *batch)
            for param, grad in zip(params, grads, strict=True):
                param.grad = grad
        optimizer.step()
        return loss

    return Contender(step, batches, lambda t: float(t.item()),
                     lambda: torch.set_num_threads(num_threads))


# ----------------------------------------------------------------------------- MAML peers


def torch_mlp(params, x):
    import torch

    h = x
    for kernel, bias in zip(params[0:-2:2], params[1:-2:2], strict=True):
        h = torch.relu(torch.addmm(bias, h, kernel))
    return torch.addmm(params[-1], h, params[-2])


def torch_maml_task_loss(inner_lr: float) -> Callable:
    """Query loss of one task after one inner SGD step (differentiable, as `torch.func`)."""
    from torch.func import grad

    def mse(params, x, y):
        return ((torch_mlp(params, x) - y) ** 2).mean()

    def task_loss(params, sx, sy, qx, qy):
        grads = grad(mse)(params, sx, sy)
        return mse([p - inner_lr * g for p, g in zip(params, grads, strict=True)], qx, qy)

    return task_loss


def torch_maml_losses(inner_lr: float, vectorized: bool, create_graph: bool = True) -> Callable:
    """`(params, sx, sy, qx, qy) -> mean query loss` of a meta-batch: `vmap` or a loop."""
    import torch
    from torch.func import vmap

    if vectorized:
        batched = vmap(torch_maml_task_loss(inner_lr), in_dims=(None, 0, 0, 0, 0))
        return lambda params, *batch: batched(params, *batch).mean()

    def looped(params, *batch):
        losses = []
        for sx, sy, qx, qy in zip(*batch, strict=True):
            support = ((torch_mlp(params, sx) - sy) ** 2).mean()
            grads = torch.autograd.grad(support, params, create_graph=create_graph)
            adapted = [p - inner_lr * g for p, g in zip(params, grads, strict=True)]
            losses.append(((torch_mlp(adapted, qx) - qy) ** 2).mean())
        return torch.stack(losses).mean()

    return looped


def maml_contenders(config: BenchConfig, init: list, batches: list[dict]) -> dict:
    import torch
    from torch.func import grad_and_value

    maml, b = config.maml, config.maml.meta_batch_size
    contenders = {}
    for name, mode, jit in (("ours_vectorized_map", "vectorized_map", False),
                            ("ours_map_fn", "map_fn", False), ("ours_map_fn_xla", "map_fn", True)):
        model = MAML(mlp_regressor(maml.hidden), inner_lr=maml.inner_lr, inner_steps=1,
                     meta_batch_mode=mode, problem="regression")
        model.learner.set_weights(init)
        contenders[name] = tf_contender(model, batches, b, config.learning_rate, jit)
    tensors = [tuple(torch.from_numpy(x[k]) for k in EPISODE_KEYS) for x in batches]
    vmapped = torch_maml_losses(maml.inner_lr, vectorized=True)
    for name, loss_fn, grad_fn, threads in (
        ("torch_vmap", vmapped, None, None),
        ("torch_vmap_func_grad", None, grad_and_value(vmapped), None),
        ("torch_vmap_1_thread", vmapped, None, 1),
        ("torch_loop", torch_maml_losses(maml.inner_lr, vectorized=False), None, None),
    ):
        params = [torch.from_numpy(w.copy()).requires_grad_() for w in init]
        contenders[name] = torch_contender(params, loss_fn, tensors, config.learning_rate,
                                           grad_fn, threads)
    return contenders


def maml_agreement(config: BenchConfig, init: list, batch: dict) -> dict:
    """First-step loss and meta-gradient of ours vs `torch_vmap` (and vs first order)."""
    import torch

    model = MAML(mlp_regressor(config.maml.hidden), inner_lr=config.maml.inner_lr,
                 inner_steps=1, problem="regression")
    model.learner.set_weights(init)
    episode = {k: tf.constant(v) for k, v in batch.items()}
    loss, grads, _ = tf.function(model.train_gradients)(episode, config.maml.meta_batch_size)
    tensors = [torch.from_numpy(batch[k]) for k in EPISODE_KEYS]
    peer = {}
    for name, loss_fn in (("second_order", torch_maml_losses(config.maml.inner_lr, True)),
                          ("first_order", torch_maml_losses(config.maml.inner_lr, False,
                                                            create_graph=False))):
        params = [torch.from_numpy(w.copy()).requires_grad_() for w in init]
        torch_loss = loss_fn(params, *tensors)
        peer[name] = (torch_loss.item(), torch.autograd.grad(torch_loss, params))
    ours = [g.numpy() for g in grads]
    return agreement_figures(float(loss), ours, peer["second_order"][0],
                             [g.numpy() for g in peer["second_order"][1]]) | {
        "grad_rel_diff_vs_torch_first_order": rel_diff(
            ours, [g.numpy() for g in peer["first_order"][1]])}


# ----------------------------------------------------------------------------- ProtoNet peers


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`BatchNormalization` with the change proposed for Conv-4 in `tf_mtml/meta/backbones.py`.

    In training, Keras's layer normalizes with `tf.nn.moments` and `tf.nn.batch_normalization`:
    about ten elementwise passes and reductions over the activations forward and backward,
    which take most of a Conv-4 step on CPU (the first block's maps are the largest tensors
    of the model). Here one `FusedBatchNormV3` op does the forward pass and one
    `FusedBatchNormGradV3` the backward. It also fixes second-order MAML: `tf.nn.moments`
    computes the variance around `stop_gradient(mean)`, exact for first derivatives only, so
    MAML's meta-gradient through Keras's layer is wrong (by 32% on a two-block conv net,
    against float64 finite differences), while `FusedBatchNormGradV3` has an exact registered
    gradient. Same statistics, same
    moving-average updates; other cases (inference, masks, renorm, synchronized statistics,
    other axes, float64) are the parent's.
    """

    def call(self, inputs, training=None, mask=None):
        fusable = (training and self.trainable and mask is None and not self.renorm
                   and not self.synchronized and self.scale and self.center
                   and len(inputs.shape) == 4 and self.axis in (-1, 3)
                   and inputs.dtype in (tf.float16, tf.bfloat16, tf.float32))
        if not fusable:
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, "float32")  # As the parent: statistics in float32.
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"),
            epsilon=self.epsilon, data_format="NHWC", is_training=True)
        # The op returns the unbiased variance; Keras averages the biased one.
        count = ops.cast(ops.prod(ops.shape(x)[:3]), "float32")
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1 - self.momentum))
        return ops.cast(y, self.compute_dtype)


def fused_bn_conv4(encoder: keras.Model) -> keras.Model:
    """A copy of `encoder` (same weights) whose BatchNormalization layers are fused."""

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization):
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    model = keras.models.clone_model(encoder, clone_function=clone)
    model.set_weights(encoder.get_weights())
    return model


def torch_conv4(encoder: keras.Model):
    """The standard PyTorch Conv-4 (NCHW) holding `encoder`'s weights."""
    import torch
    from torch import nn

    layers = []
    for i in range(4):
        conv, bn = encoder.get_layer(f"conv{i}"), encoder.get_layer(f"bn{i}")
        torch_conv = nn.Conv2d(conv.kernel.shape[2], conv.filters, 3, padding=1)
        torch_bn = nn.BatchNorm2d(conv.filters, eps=bn.epsilon, momentum=1 - bn.momentum)
        with torch.no_grad():
            torch_conv.weight.copy_(torch.from_numpy(np.transpose(conv.kernel.numpy(),
                                                                  (3, 2, 0, 1))))
            torch_conv.bias.copy_(torch.from_numpy(conv.bias.numpy()))
            torch_bn.weight.copy_(torch.from_numpy(bn.gamma.numpy()))
            torch_bn.bias.copy_(torch.from_numpy(bn.beta.numpy()))
        layers += [torch_conv, torch_bn, nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten())


def torch_protonet_loss(net, config: ProtoConfig) -> Callable:
    """`(params, images, query_y) -> loss`: support then query images, class-major."""
    import torch

    num_support = config.num_ways * config.num_shots

    def loss_fn(params, images, query_y):
        del params  # The module holds them.
        features = net(images)
        prototypes = features[:num_support].view(config.num_ways, config.num_shots, -1).mean(1)
        query = features[num_support:]
        # The same expansion as `PrototypicalNetwork`: |q|^2 + |c|^2 - 2 q.c.
        squared = ((query**2).sum(-1, keepdim=True) + (prototypes**2).sum(-1)
                   - 2.0 * query @ prototypes.T)
        return torch.nn.functional.cross_entropy(-squared, query_y)

    return loss_fn


def torch_protonet_batches(batches: list[dict]) -> list[tuple]:
    import torch

    def images(x):
        return np.transpose(x[0], (0, 3, 1, 2))

    return [(torch.from_numpy(np.ascontiguousarray(np.concatenate(
        [images(b[SUPPORT_X]), images(b[QUERY_X])]))), torch.from_numpy(b[QUERY_Y][0]).long())
        for b in batches]


def protonet_model(config: ProtoConfig, encoder: keras.Model, fused_bn: bool) -> keras.Model:
    """`PrototypicalNetwork` on a copy of `encoder` (same weights), BatchNorm fused or not."""
    copy = keras.models.clone_model(encoder)
    copy.set_weights(encoder.get_weights())
    model = PrototypicalNetwork(fused_bn_conv4(copy) if fused_bn else copy,
                                num_ways=config.num_ways)
    model.build({SUPPORT_X: (1, None, config.image_size, config.image_size, 1)})
    return model


def protonet_contenders(config: BenchConfig, proto: ProtoConfig, encoder: keras.Model,
                        batches: list[dict]) -> dict:
    contenders = {}
    for name, fused_bn, jit in (("ours", False, False), ("ours_xla", False, True),
                                ("ours_fused_bn", True, False)):
        contenders[name] = tf_contender(protonet_model(proto, encoder, fused_bn), batches, 1,
                                        config.learning_rate, jit)
    for name, threads in (("torch", None), ("torch_1_thread", 1)):
        net = torch_conv4(encoder)
        contenders[name] = torch_contender(list(net.parameters()),
                                           torch_protonet_loss(net, proto),
                                           torch_protonet_batches(batches),
                                           config.learning_rate, num_threads=threads)
    return contenders


def protonet_agreement(proto: ProtoConfig, encoder: keras.Model, batch: dict) -> dict:
    """First-step loss and gradients of ours vs PyTorch, of the fused-BN Conv-4, and of both
    frameworks vs PyTorch in float64 (large episodes: float32 sums over ~10^5 terms)."""
    episode = {k: tf.constant(v) for k, v in batch.items()}
    results = {}
    for prefix, fused_bn in (("ours", False), ("ours_fused_bn", True)):
        model = protonet_model(proto, encoder, fused_bn)
        loss, grads, _ = tf.function(model.train_gradients)(episode, 1)
        results[prefix] = (float(loss), [g.numpy() for g in grads])
    results["torch"], results["torch_float64"] = (
        torch_protonet_gradients(proto, encoder, batch, dtype) for dtype in ("float32", "float64"))
    figures = agreement_figures(*results["ours"], *results["torch"])
    figures["fused_bn_loss_rel_diff"] = abs(results["ours_fused_bn"][0] / results["ours"][0]
                                            - 1)
    figures["fused_bn_grad_rel_diff"] = rel_diff(results["ours_fused_bn"][1],
                                                 results["ours"][1])
    for name in ("ours", "ours_fused_bn", "torch"):
        figures[f"{name}_grad_rel_diff_vs_float64"] = rel_diff(results[name][1],
                                                               results["torch_float64"][1])
    return figures


def torch_protonet_gradients(proto: ProtoConfig, encoder: keras.Model, batch: dict,
                             dtype: str) -> tuple[float, list[np.ndarray]]:
    """PyTorch's loss and gradients in `dtype`, conv kernels in Keras's `(3, 3, in, out)`."""
    import torch

    net = torch_conv4(encoder).to(getattr(torch, dtype))
    images, labels = torch_protonet_batches([batch])[0]
    loss = torch_protonet_loss(net, proto)(None, images.to(getattr(torch, dtype)), labels)
    grads = [g.numpy() for g in torch.autograd.grad(loss, list(net.parameters()))]
    return loss.item(), [np.transpose(g, (2, 3, 1, 0)) if g.ndim == 4 else g for g in grads]


def rel_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """`|a - b| / |b|` over all tensors flattened into one vector."""
    a, b = (np.concatenate([np.ravel(x) for x in xs]).astype(np.float64) for xs in (a, b))
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def agreement_figures(loss: float, grads: list, torch_loss: float, torch_grads: list) -> dict:
    return {"loss": loss, "torch_loss": torch_loss, "loss_rel_diff": abs(loss / torch_loss - 1),
            "grad_rel_diff": rel_diff(grads, torch_grads)}


# ----------------------------------------------------------------------------- GEMMs


def gemms(shape: tuple[int, int, int], seed: int) -> dict[str, Callable[[int], float]]:
    """`{name: run(n)}`: `(m, k) x (k, n)` float32 in TF (graph, XLA) and PyTorch."""
    import torch

    m, k, n = shape
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)

    def tf_run(jit_compile: bool) -> Callable[[int], float]:
        # Passed as arguments: grappler would constant-fold a matmul of captured constants.
        matmul, tf_a, tf_b = tf.function(tf.matmul, jit_compile=jit_compile), tf.constant(a), \
            tf.constant(b)

        def run(num_calls: int) -> float:
            for _ in range(num_calls):
                c = matmul(tf_a, tf_b)
            return float(c[0, 0])

        return run

    torch_a, torch_b = torch.from_numpy(a), torch.from_numpy(b)

    def torch_run(num_calls: int) -> float:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        for _ in range(num_calls):
            c = torch_a @ torch_b
        return float(c[0, 0])

    return {"tf_gemm": tf_run(False), "tf_gemm_xla": tf_run(True), "torch_gemm": torch_run}


# ----------------------------------------------------------------------------- measurement


def measure(contenders: dict[str, Contender], gemm_runs: dict, schedule: Schedule,
            flops_per_step: float, gemm_flops: float) -> dict:
    """First calls, then interleaved timed repeats; per contender ms, GFLOP/s, first call."""
    figures = {}
    for name, contender in contenders.items():
        seconds, loss = contender.first_call()
        figures[name] = {"first_call_s": seconds, "first_loss": loss}
    runs = {name: c.run for name, c in contenders.items()} | gemm_runs
    for run in runs.values():
        run(schedule.warmup_steps)
    samples = {name: [] for name in runs}
    for _ in range(schedule.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(schedule.steps)
            samples[name].append((time.perf_counter() - start) / schedule.steps)
    for name, values in samples.items():
        seconds = statistics.median(values)
        work = gemm_flops if name in gemm_runs else flops_per_step
        figures.setdefault(name, {}).update(ms_per_step=seconds * 1e3,
                                            gflops=work / seconds / 1e9)
    return figures


def check_targets(values: dict, targets: dict) -> dict:
    checks = {}
    for name, (comparison, threshold) in targets.items():
        met = values[name] >= threshold if comparison == ">=" else values[name] <= threshold
        checks[name] = {"value": values[name], "target": f"{comparison} {threshold}",
                        "met": bool(met)}
    return checks


def summarize(figures: dict, ours: tuple[str, ...], torch_reference: tuple[str, ...],
              targets: dict, ratio_name: str) -> dict:
    """Headline (fastest of `ours`) against the fastest reference, the GEMM, the targets."""
    def fastest(names):
        return min(names, key=lambda name: figures[name]["ms_per_step"])

    headline, reference = fastest(ours), fastest(torch_reference)
    gemm = max(figures[name]["gflops"] for name in ("tf_gemm", "tf_gemm_xla"))
    values = {
        ratio_name: figures[headline]["ms_per_step"] / figures[reference]["ms_per_step"],
        "fraction_of_gemm": figures[headline]["gflops"] / gemm,
        "first_call_s": figures[headline]["first_call_s"],
    }
    checks = check_targets(values, targets)
    return {"headline": headline, "torch_reference": reference, "comparisons": values,
            "targets": checks, "targets_met": all(c["met"] for c in checks.values())}


def run_maml(config: BenchConfig) -> dict:
    keras.utils.set_random_seed(config.seed)
    init = mlp_regressor(config.maml.hidden).get_weights()
    batches = maml_batches(config.maml, config.seed)
    flops = maml_flops(config.maml)
    m = config.maml.meta_batch_size * (config.maml.num_shots + config.maml.num_queries)
    shape = (m, config.maml.hidden[0], config.maml.hidden[-1])
    figures = measure(maml_contenders(config, init, batches), gemms(shape, config.seed),
                      config.maml.schedule, flops["per_step"], 2 * np.prod(shape))
    ours = ("ours_vectorized_map", "ours_map_fn", "ours_map_fn_xla")
    summary = summarize(figures, ours,
                        ("torch_vmap", "torch_vmap_func_grad", "torch_vmap_1_thread"),
                        TARGETS["maml"], "time_vs_torch_vmap")
    return {"flops": flops, "gemm_shape": shape, "figures": figures,
            "agreement": maml_agreement(config, init, batches[0]), **summary}


def run_protonet(config: BenchConfig, proto: ProtoConfig) -> dict:
    keras.utils.set_random_seed(config.seed)
    encoder = conv4((proto.image_size,) * 2 + (1,), proto.filters)
    batches = protonet_batches(proto, config.seed)
    flops = protonet_flops(proto)
    side = proto.image_size // 2
    shape = (proto.num_images * side * side, 9 * proto.filters, proto.filters)
    figures = measure(protonet_contenders(config, proto, encoder, batches),
                      gemms(shape, config.seed), proto.schedule, flops["per_step"],
                      2 * np.prod(shape))
    torch_reference = ("torch", "torch_1_thread")
    summary = summarize(figures, ("ours", "ours_xla"), torch_reference, TARGETS["protonet"],
                        "time_vs_torch")
    proposed = summarize(figures, ("ours_fused_bn",), torch_reference, TARGETS["protonet"],
                         "time_vs_torch")
    return {"flops": flops, "gemm_shape": shape, "figures": figures,
            "agreement": protonet_agreement(proto, encoder, batches[0]), **summary,
            "ours_fused_bn": proposed}


def run_benchmark(config: BenchConfig) -> dict:
    """Runs every workload and returns the report (JSON-ready)."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    load_before = os.getloadavg()
    report = {"config": dataclasses.asdict(config), "maml_sinusoid": run_maml(config)}
    for proto in config.protonets:
        report[proto.name] = run_protonet(config, proto)
    workloads = ["maml_sinusoid", *(p.name for p in config.protonets)]
    report["all_targets_met"] = all(report[w]["targets_met"] for w in workloads)
    report["machine"] = {
        **machine_info(with_torch=True),
        "tf_intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "load_average_1_5_15_before": load_before,
        "load_average_1_5_15_after": os.getloadavg(),
        "note": "shared machine: repeats are interleaved across the contenders of a workload "
        "and medians reported, so load from other processes hits all of them alike",
    }
    return report


def with_repeats(config: BenchConfig, repeats: int) -> BenchConfig:
    maml = dataclasses.replace(
        config.maml, schedule=dataclasses.replace(config.maml.schedule, repeats=repeats))
    protonets = tuple(dataclasses.replace(p, schedule=dataclasses.replace(p.schedule,
                                                                          repeats=repeats))
                      for p in config.protonets)
    return dataclasses.replace(config, maml=maml, protonets=protonets)


def main(argv) -> None:
    del argv
    import torch

    # Both frameworks use every core given to the process, set before TF starts its pools.
    cores = len(os.sched_getaffinity(0))
    tf.config.threading.set_intra_op_parallelism_threads(cores)
    torch.set_num_threads(cores)
    tf.get_logger().setLevel("ERROR")  # Each contender traces its own step: not a retrace.
    config = QUICK if FLAGS.quick else BenchConfig()
    if FLAGS.repeats is not None:
        config = with_repeats(config, FLAGS.repeats)
    print(json.dumps({"benchmark": "meta_speed", **run_benchmark(config)}, indent=1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
