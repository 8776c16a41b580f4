"""Preemption: SIGTERM makes the trainer checkpoint at the end of the current loop and stop.

Cloud VMs and TPU VMs announce preemption with SIGTERM and a grace period (30 s on Compute
Engine). `PreemptionWatcher` replaces the SIGTERM handler with one that only sets a flag; the
Trainer reads it between compiled loops (a signal cannot interrupt a running `tf.function`,
so keep `steps_per_loop` x step time well inside the grace period), writes a checkpoint and
raises `TrainingPreempted`; `trainers.train` turns that into exit status 0, and the same
command resumes from that checkpoint.

Under a multi-worker strategy the flag is summed over workers, so when any worker is told to
stop, all of them checkpoint at the same step (a checkpoint is a collective operation there).
"""

from __future__ import annotations

import signal
import threading

import tensorflow as tf
from absl import logging


class TrainingPreempted(Exception):
    """Raised by `Trainer.train` after it checkpointed on a termination signal.

    Attributes:
        step: The step of the checkpoint it wrote.
        checkpoint: The checkpoint's path.
    """

    def __init__(self, step: int, checkpoint: str):
        super().__init__(
            f"Training was preempted (termination signal) at step {step}; checkpoint "
            f"{checkpoint} was written. Rerun the same command to resume from it."
        )
        self.step, self.checkpoint = step, checkpoint


class PreemptionWatcher:
    """Turns SIGTERM into a flag that the training loop polls between compiled loops.

    Use as a context manager around training: the previous handler is restored on exit. When
    not on the main thread (signal handlers can only be set there) it only watches `request`.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self._signals = signals
        self._received: int | None = None
        self._previous: dict[int, object] = {}
        self._depth = 0

    def __enter__(self) -> PreemptionWatcher:
        # Re-entrant: a schedule watches across its evaluations, `train` inside it again.
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in self._signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self._depth -= 1
        if self._depth:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        self._received = None  # answered (or training ended): a later run starts unsignalled

    def _handle(self, signum, frame) -> None:
        del frame
        if self._received is None:
            logging.warning("Received %s: checkpointing at the end of the current loop, then "
                            "stopping.", signal.Signals(signum).name)
        self._received = signum

    def request(self) -> None:
        """Asks the loop to checkpoint and stop, as a termination signal does."""
        self._received = signal.SIGTERM

    @property
    def received(self) -> bool:
        return self._received is not None

    def any_worker_received(self, strategy: tf.distribute.Strategy) -> bool:
        """Whether this process or, under a multi-worker strategy, any worker was signalled.

        Every worker must call this at the same point of the loop (it is a collective).
        """
        if strategy.extended._in_multi_worker_mode():  # noqa: SLF001  (as Keras' callbacks)
            flag = tf.constant(1.0 if self.received else 0.0)
            total = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: flag),
                                    axis=None)
            return float(total) > 0
        return self.received
