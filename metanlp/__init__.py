"""metanlp: few-shot text classification and NER by meta-learning on Hugging Face Transformers.

```python
from metanlp import MetaLearner

learner = MetaLearner.from_pretrained("path/or/hub-id")
clf = learner.adapt(texts, labels, steps=10)
clf.predict(["a new text"])
```

Names are imported on first use, so ``import metanlp`` stays cheap (no torch import).
"""

from __future__ import annotations

from metanlp.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "MetaLearner": "metanlp.api",
    "FewShotClassifier": "metanlp.predictors",
    "FewShotTagger": "metanlp.predictors",
    "LearnerConfig": "metanlp.serialization",
    "FewShotModel": "metanlp.models",
    "load_encoder": "metanlp.models",
    "MetaTrainer": "metanlp.training",
    "MetaTrainerConfig": "metanlp.training.config",
    "evaluate": "metanlp.evaluation",
    "evaluate_file": "metanlp.evaluation",
    "comparison_table": "metanlp.evaluation",
    "paired_difference": "metanlp.evaluation",
    "FineTuneBaseline": "metanlp.baselines",
    "FrozenPrototypes": "metanlp.baselines",
    "build_algorithm": "metanlp.meta.registry",
    "list_algorithms": "metanlp.meta.registry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(
    __name__, _EXPORTS, globals(), before={"metanlp.meta.registry": "metanlp.meta"}
)  # the registry lists the algorithms that importing metanlp.meta registers
