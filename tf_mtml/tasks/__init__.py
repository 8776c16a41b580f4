"""tf_mtml.tasks: task families that turn an experiment config into a model, inputs and steps."""
