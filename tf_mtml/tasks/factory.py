"""Maps an experiment's task config to the task family that builds it."""

from __future__ import annotations

from tf_mtml.configs.contrastive import ContrastiveConfig
from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.configs.meta import MetaLearningConfig
from tf_mtml.configs.multitask import MultiTaskConfig
from tf_mtml.configs.ranking import RankingConfig
from tf_mtml.tasks.contrastive import ContrastiveTask
from tf_mtml.tasks.meta import MetaLearningTask
from tf_mtml.tasks.multitask import MultiTaskLearningTask
from tf_mtml.tasks.ranking import RankingTask

_TASKS = {MultiTaskConfig: MultiTaskLearningTask, MetaLearningConfig: MetaLearningTask,
          ContrastiveConfig: ContrastiveTask, RankingConfig: RankingTask}


def build_task(config: ExperimentConfig):
    """The task object for `config.task` (seeded with `config.runtime.seed`)."""
    for config_class, task_class in _TASKS.items():
        if isinstance(config.task, config_class):
            return task_class(config.task, seed=config.runtime.seed)
    raise ValueError(
        f"No task family handles a task config of type {type(config.task).__name__}; "
        f"known: {[c.__name__ for c in _TASKS]}."
    )
