"""tf_mtml: Keras 3 / TensorFlow toolkit for multi-task, meta- and contrastive learning."""

__version__ = "0.1.0"

__all__ = ["__version__"]
