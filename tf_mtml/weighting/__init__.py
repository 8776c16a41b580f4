"""tf_mtml.weighting."""
