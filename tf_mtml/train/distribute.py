"""`tf.distribute` strategies built from a name, as in TF Model Garden."""

from __future__ import annotations

import tensorflow as tf

from tf_mtml.configs.experiment import STRATEGIES


def configure_cpu_devices(num_devices: int) -> None:
    """Splits the host CPU into `num_devices` logical devices (for mirrored runs on CPU).

    Must run before TensorFlow initialises its devices; a later call with the same count is
    a no-op and a different count raises.
    """
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0]) or [None]
    if len(current) == num_devices:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
    except RuntimeError as e:
        raise RuntimeError(
            f"Cannot split the CPU into {num_devices} logical devices: TensorFlow's devices are "
            "already initialised in this process. Set `runtime.num_cpu_devices` before any "
            "TensorFlow op runs (e.g. start a fresh process)."
        ) from e


def tpu_strategy(tpu: str) -> tf.distribute.TPUStrategy:
    """Connects to `tpu` (a name, a grpc:// address or "local") and returns a TPUStrategy."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu="" if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise RuntimeError(
            f"No TPU reachable at --tpu={tpu!r} ({type(e).__name__}: {e}). On a Cloud TPU VM "
            "pass --tpu=local; elsewhere pass the TPU's name or grpc://IP:8470, or choose "
            "another --strategy (default, one_device, mirrored, multi_worker_mirrored)."
        ) from e
    return tf.distribute.TPUStrategy(resolver)


def get_strategy(name: str, tpu: str = "", num_cpu_devices: int = 1) -> tf.distribute.Strategy:
    """Returns the strategy called `name` (one of `STRATEGIES`).

    `mirrored` mirrors over all GPUs, or over `num_cpu_devices` logical CPUs when there is no
    GPU (how the distributed code path is tested on a laptop or CI).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}; expected one of {STRATEGIES}.")
    if name == "tpu":
        return tpu_strategy(tpu)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if num_cpu_devices > 1:
        configure_cpu_devices(num_cpu_devices)
    gpus = tf.config.list_logical_devices("GPU")
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if name == "mirrored":
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    return tf.distribute.get_strategy()
