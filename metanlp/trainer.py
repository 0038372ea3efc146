"""`metanlp.trainer` stays importable: the trainer lives in `metanlp.training`."""

from metanlp.training import (
    DataConfig,
    MetaTrainer,
    MetaTrainerConfig,
    OptimizerConfig,
    TrainerState,
)

__all__ = ["DataConfig", "MetaTrainer", "MetaTrainerConfig", "OptimizerConfig", "TrainerState"]
