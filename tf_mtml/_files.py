"""Atomic text files, local or on any `tf.io.gfile` file system (gs://, ...)."""

from __future__ import annotations

import os
import uuid

import tensorflow as tf


def atomic_write_text(path: str, text: str) -> str:
    """Writes `text` to `path` so that a reader sees the old file or the new one, never half.

    The text goes to a dot-prefixed temporary sibling with a unique name (hosts sharing a
    directory cannot collide; TF Serving never takes it for a version), which is then renamed
    over `path`; on failure the temporary file is removed.

    Args:
        path: The file to write.
        text: Its new contents.

    Returns:
        `path`.
    """
    directory, name = os.path.split(path)
    temp = os.path.join(directory, f".{name}.tmp-{uuid.uuid4().hex}")
    try:
        if "://" in path:  # gs:// and the other file systems of tf.io.gfile
            with tf.io.gfile.GFile(temp, "w") as f:
                f.write(text)
            tf.io.gfile.rename(temp, path, overwrite=True)
        else:  # a POSIX rename: atomic within one file system
            with open(temp, "w") as f:
                f.write(text)
            os.replace(temp, path)
    finally:
        if tf.io.gfile.exists(temp):
            tf.io.gfile.remove(temp)
    return path
