"""tf_mtml.train."""
