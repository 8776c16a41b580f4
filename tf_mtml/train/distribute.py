"""`tf.distribute` strategies built from a name, as in TF Model Garden."""

from __future__ import annotations

import os
import socket

import tensorflow as tf

from tf_mtml.configs.experiment import STRATEGIES

# TensorFlow waits for an unanswering TPU worker without a deadline; the probe does not.
TPU_CONNECT_TIMEOUT_S = 10.0
# The HTTP/2 client preface and an empty SETTINGS frame (RFC 9113, sec. 3.4 and 6.5).
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_HTTP2_SETTINGS_FRAME = 4


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


class TPUUnreachableError(RuntimeError):
    """No TPU answers at the address given (`tpu_strategy`)."""


def tpu_strategy(tpu: str, timeout: float = TPU_CONNECT_TIMEOUT_S) -> tf.distribute.TPUStrategy:
    """Connects to the TPU `tpu` and returns a `TPUStrategy`; fails in seconds when none answers.

    The steps of TF Model Garden's `tpu_initialize`: `TPUClusterResolver`, then (for a remote
    TPU) `experimental_connect_to_cluster`, `initialize_tpu_system` and `TPUStrategy`.
    TensorFlow waits without a deadline for a TPU worker that does not answer, so each worker
    address is first probed with a gRPC (HTTP/2) handshake of at most `timeout` seconds.

    Args:
        tpu: `"local"` on a Cloud TPU VM (the TPU is attached to this host); a Cloud TPU name
            (looked up through the Cloud TPU API, from a Google Cloud VM); or the address of a
            TPU worker, `grpc://IP:8470`.
        timeout: Seconds to wait for the metadata server or a TPU worker to answer.

    Returns:
        The strategy, with the TPU system initialised.

    Raises:
        TPUUnreachableError: No TPU answers at `tpu` (a `RuntimeError` whose message names
            the address and the fixes).
    """
    if not tpu:
        raise ValueError(
            "Received an invalid value for `tpu`, expected 'local', a Cloud TPU name or "
            f"grpc://IP:8470. Received: tpu={tpu!r}")
    try:
        if tpu != "local" and not tpu.startswith("grpc://"):
            _check_metadata_server(tpu, timeout)
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            spec = resolver.cluster_spec()
            for address in (a for job in spec.jobs for a in spec.job_tasks(job)):
                problem = _grpc_problem(address, timeout)
                if problem:
                    raise _no_tpu(tpu, f"the TPU worker at {address} {problem}")
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except TPUUnreachableError:
        raise
    except tf.errors.NotFoundError as e:
        raise _no_tpu(tpu, _no_tpu_found(tpu, e)) from e
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        # The resolver's and the Cloud TPU API's errors: unknown name, TPU not ready, ...
        raise _no_tpu(tpu, f"{type(e).__name__}: {e}") from e
    return tf.distribute.TPUStrategy(resolver)


def _no_tpu(tpu: str, reason: str) -> TPUUnreachableError:
    others = "choose another --strategy (default, one_device, mirrored or multi_worker_mirrored)"
    if tpu == "local":
        fix = ("Run on a Cloud TPU VM (`gcloud compute tpus tpu-vm ssh NAME --zone=ZONE`), pass "
               f"a remote TPU's name or grpc://IP:8470, or {others}")
    else:
        fix = ("On a Cloud TPU VM pass --tpu=local; from another Google Cloud VM pass the TPU's "
               "name, or grpc://IP:8470 with its internal IP (`gcloud compute tpus describe NAME "
               f"--zone=ZONE`); without a TPU {others}")
    return TPUUnreachableError(f"No TPU reachable at --tpu={tpu!r}: {reason}. {fix}.")


def _no_tpu_found(tpu: str, error: tf.errors.NotFoundError) -> str:
    first = error.message.split(". ")[0]
    if tpu == "local":
        return ("this machine has no TPU attached, or its TensorFlow is not built for TPUs (a "
                f"Cloud TPU VM created with a tpu-vm-tf-* software version has both) ({first})")
    return f"it answered, but has no TPU ({first})"


def _check_metadata_server(tpu: str, timeout: float) -> None:
    """A TPU name is resolved through the metadata server of a Google Cloud VM: is there one?"""
    host = (os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_IP")
            or "metadata.google.internal")
    name, _, port = host.partition(":")
    try:
        socket.create_connection((name, int(port or 80)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        raise _no_tpu(tpu, (
            f"a TPU name is looked up through the Google Cloud metadata server ({host}), which "
            f"did not answer ({type(e).__name__}: {e}), so this is not a Google Cloud VM"
        )) from e


def _grpc_problem(address: str, timeout: float) -> str | None:
    """None if a gRPC server answers at `host:port` within `timeout` seconds, else what failed.

    Sends the HTTP/2 client preface; a gRPC server's first frame is its SETTINGS frame.
    """
    host, _, port = address.rpartition(":")
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except (OSError, ValueError) as e:
        return f"cannot be reached ({type(e).__name__}: {e})"
    header = b""
    with conn:
        try:
            conn.sendall(_HTTP2_PREFACE)
            while len(header) < 9 and (chunk := conn.recv(9 - len(header))):
                header += chunk
        except OSError as e:
            return f"accepts connections but did not answer gRPC ({type(e).__name__}: {e})"
    if len(header) < 9 or header[3] != _HTTP2_SETTINGS_FRAME:
        return "accepts connections but is no gRPC server (it did not answer HTTP/2)"
    return None


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
