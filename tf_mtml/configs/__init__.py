"""tf_mtml.configs."""
