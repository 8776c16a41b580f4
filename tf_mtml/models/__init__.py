"""tf_mtml.models."""
