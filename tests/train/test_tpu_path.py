"""The TPU path without a TPU: connecting fails in seconds with the fix; steps run in loops.

`--strategy=tpu` builds `TPUClusterResolver` -> `experimental_connect_to_cluster` ->
`initialize_tpu_system` -> `TPUStrategy` (`tf_mtml.train.distribute.tpu_strategy`).
TensorFlow waits without a deadline for a TPU worker that does not answer, so the worker is
probed first; each way of not reaching a TPU is checked here, against a real TensorFlow gRPC
server where one is needed. The static input shapes and XLA compilation of every experiment
are checked in `tests/tasks/test_tpu_inputs.py`, `test_xla_train_steps.py` and `test_meta_*`.
"""

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.train.tpu_checks import REPOSITORY_ROOT
from tf_mtml.configs import experiments
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.distribute import TPUUnreachableError, get_strategy, tpu_strategy
from tf_mtml.train.loop import Trainer

CLOSED = "grpc://127.0.0.1:1"


def _raises_quickly(tpu: str, match: str, timeout: float = 0.5) -> str:
    start = time.monotonic()
    with pytest.raises(TPUUnreachableError, match=match) as error:
        tpu_strategy(tpu, timeout=timeout)
    assert time.monotonic() - start < timeout + 2
    return str(error.value)


def test_closed_port_fails_at_once_naming_the_address_and_the_fixes():
    message = _raises_quickly(CLOSED, r"No TPU reachable at --tpu='grpc://127\.0\.0\.1:1': "
                                      r"the TPU worker at 127\.0\.0\.1:1 cannot be reached")
    assert "--tpu=local" in message and "grpc://IP:8470" in message and "--strategy" in message


def test_get_strategy_tpu_goes_through_the_same_check():
    with pytest.raises(TPUUnreachableError, match="127.0.0.1:1"):
        get_strategy("tpu", tpu=CLOSED)


def test_a_port_that_never_answers_fails_after_the_timeout():
    with socket.create_server(("127.0.0.1", 0)) as server:  # listens, never accepts
        address = f"127.0.0.1:{server.getsockname()[1]}"
        _raises_quickly(f"grpc://{address}", f"{address} accepts connections but did not "
                                             "answer gRPC")


def test_a_port_that_answers_something_else_is_no_grpc_server():
    with socket.create_server(("127.0.0.1", 0)) as server:
        def banner():
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")

        thread = threading.Thread(target=banner, daemon=True)
        thread.start()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        _raises_quickly(f"grpc://{address}", "is no gRPC server", timeout=5.0)
        thread.join(timeout=5)


def test_a_tpu_name_needs_a_google_cloud_metadata_server(monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:1")
    message = _raises_quickly("my-tpu", r"--tpu='my-tpu': a TPU name is looked up through the "
                                        r"Google Cloud metadata server \(127\.0\.0\.1:1\)")
    assert "not a Google Cloud VM" in message


def test_an_empty_address_is_rejected():
    with pytest.raises(ValueError, match=r"expected 'local'.*Received: tpu=''"):
        tpu_strategy("")


CONNECT = textwrap.dedent("""
    import json, sys, time
    from tf_mtml.train.distribute import tpu_strategy

    results = {}
    for tpu in sys.argv[1:]:
        start = time.monotonic()
        try:
            tpu_strategy(tpu, timeout=5.0)
            results[tpu] = {"error": None}
        except Exception as e:
            results[tpu] = {"error": f"{type(e).__name__}: {e}"}
        results[tpu]["seconds"] = time.monotonic() - start
    print(json.dumps(results))
""")
SERVER = textwrap.dedent("""
    import sys
    import tensorflow as tf

    tf.distribute.Server({"worker": [f"localhost:{sys.argv[1]}"]}, job_name="worker",
                         task_index=0).join()
""")


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"The TensorFlow server on port {port} did not start.")


@pytest.mark.slow
def test_local_without_a_tpu_and_a_tensorflow_server_without_a_tpu_fail_in_seconds():
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, server)
        remote = f"grpc://localhost:{port}"
        result = subprocess.run([sys.executable, "-c", CONNECT, "local", remote],
                                cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=180)
    finally:
        server.kill()
        server.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    local, served = outcome["local"], outcome[remote]
    assert local["error"].startswith("TPUUnreachableError: No TPU reachable at --tpu='local': "
                                     "this machine has no TPU attached")
    assert "Run on a Cloud TPU VM" in local["error"]
    # The probe let the real gRPC server through; TensorFlow connected and found no TPU.
    assert served["error"].startswith(f"TPUUnreachableError: No TPU reachable at --tpu='{remote}'"
                                      ": it answered, but has no TPU")
    assert local["seconds"] < 30 and served["seconds"] < 30


@pytest.mark.slow
def test_the_trainer_cli_fails_in_seconds_when_no_tpu_answers(tmp_path):
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "trainers.train", "--experiment=mmoe_synthetic",
         f"--model_dir={tmp_path}", "--strategy=tpu", f"--tpu={CLOSED}"],
        cwd=REPOSITORY_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert f"No TPU reachable at --tpu='{CLOSED}'" in result.stderr
    assert time.monotonic() - start < 90  # importing TensorFlow is most of it


def test_one_host_call_runs_exactly_steps_per_loop_steps_in_one_trace(tmp_path):
    params = experiments.get_experiment("mmoe_synthetic").override_from_string(
        "task.data.num_train_examples=64,task.data.num_eval_examples=32,"
        "task.data.global_batch_size=8,task.data.input_dim=4,trainer.steps_per_loop=3,"
        "trainer.checkpoint_interval=3,trainer.validation_interval=3")
    task = build_task(params)
    executed = tf.Variable(0, dtype=tf.int64, trainable=False)
    train_step = task.train_step

    def counted_step(*args):
        executed.assign_add(1)
        train_step(*args)

    task.train_step = counted_step
    trainer = Trainer(task, tf.distribute.get_strategy(), params.trainer, str(tmp_path))
    loop, steps_per_call = trainer._train_loop_fn, []

    def host_call(iterator, num_steps):
        before = int(executed.numpy())
        loop(iterator, num_steps)
        steps_per_call.append(int(executed.numpy()) - before)

    trainer._train_loop_fn = host_call
    trainer.train(9)
    assert steps_per_call == [3, 3, 3]
    assert trainer.step == 9 and loop.experimental_get_tracing_count() == 1
    # Nine batches were read: the iterator's next one is the tenth of the stream.
    features, _ = next(trainer._train_iterator())
    tenth, _ = list(task.build_inputs(True).take(10))[-1]
    np.testing.assert_array_equal(features["features"], tenth["features"])
