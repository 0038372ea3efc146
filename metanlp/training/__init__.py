"""Meta-training: `MetaTrainer` and everything it is made of.

- `config`: `MetaTrainerConfig` (YAML in, JSON out), embedding the `LearnerSpec` of the learner
  it trains;
- `setup`: what a config builds (samplers; model and algorithm come from the spec);
- `trainer`: the loop on Accelerate; `utils`: optimiser, schedule, all-reduce, task seeds;
- `checkpoint`: ``best/`` and resumable ``checkpoint-<step>`` folders; `state_io`: the
  pickle-free state files they hold;
- `validation`: meta-validation scores; `logs`: the JSONL log and the learning curve.

Names are imported on first use, so reading a config (``metanlp.training.config``, as the CLI's
``--help`` does) does not import torch.
"""

from __future__ import annotations

from metanlp.lazy import lazy_exports

_EXPORTS = {
    "DataConfig": "metanlp.training.config",
    "MetaTrainerConfig": "metanlp.training.config",
    "OptimizerConfig": "metanlp.training.config",
    "MetaTrainer": "metanlp.training.trainer",
    "TrainerState": "metanlp.training.trainer",
    "TrainingInterrupted": "metanlp.training.trainer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
