"""Meta-training: `MetaTrainer` and everything it is made of.

- `config`: `MetaTrainerConfig` (YAML in, JSON out), embedding the `LearnerSpec` of the learner
  it trains;
- `setup`: what a config builds (samplers; model and algorithm come from the spec);
- `trainer`: the loop on Accelerate; `utils`: optimiser, schedule, all-reduce, task seeds;
- `checkpoint`: ``best/`` and resumable ``checkpoint-<step>`` folders; `state_io`: the
  pickle-free state files they hold;
- `validation`: meta-validation scores; `logs`: the JSONL log and the learning curve.
"""

from metanlp.training.config import DataConfig, MetaTrainerConfig, OptimizerConfig
from metanlp.training.trainer import MetaTrainer, TrainerState, TrainingInterrupted

__all__ = [
    "DataConfig",
    "MetaTrainer",
    "MetaTrainerConfig",
    "OptimizerConfig",
    "TrainerState",
    "TrainingInterrupted",
]
