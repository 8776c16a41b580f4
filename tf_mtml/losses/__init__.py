"""tf_mtml.losses."""
