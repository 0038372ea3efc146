"""SetFit as an episode method for `metanlp.evaluation.evaluate` (benchmark venv only).

Each episode trains a fresh SetFit model on its support set: contrastive fine-tuning of the
sentence-transformers body on pairs drawn from the support examples, then a logistic-regression
head on the tuned embeddings; the query logits are the log of its class probabilities. The body is
the same MiniLM folder every metanlp method starts from (`metanlp.models.default_model_path`).

Import this module only inside ``.venv-bench``: SetFit is never a metanlp dependency, so `setfit`
is imported lazily, when the first episode is scored.

Caveats recorded with the results (`SetFitMethod.describe`):

- SetFit 1.2.0 draws its sentence pairs with a fixed seed (``TrainingArguments.seed``) whatever
  the episode seed, so two episodes with the same support set would see the same pair order;
  the benchmark passes the seed explicitly and it stays the same for every episode.
- ``TrainingArguments.max_length`` does not truncate the contrastive phase, so
  ``model.model_body.max_seq_length`` is set here to the setting's ``max_length``.
- Checkpoints are not written (``save_strategy="no"``, output in a temporary folder) and nothing
  is reported to loggers (``report_to="none"``).
"""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)


class SetFitMethod:
    """Train SetFit on each episode's support set and return query log-probabilities.

    Args:
        max_length (`int`): Token limit of the body in both phases (the setting's own).
        model_path (`str` or `Path`, *optional*): The sentence-transformers folder; defaults to
            the packaged MiniLM, the body of every other method.
        num_iterations (`int`, defaults to 20): SetFit's pair-generation rounds (its default).
        num_epochs (`int`, defaults to 1): Contrastive epochs (its default).
        batch_size (`int`, defaults to 16): Pair batch size (its default).
        seed (`int`, defaults to 42): SetFit's own seed (fixed across episodes, see above).

    Example:
        ```python
        >>> from metanlp.evaluation import evaluate
        >>> evaluate({"setfit": SetFitMethod(max_length=64)}, episodes)
        ```
    """

    def __init__(
        self,
        max_length: int,
        model_path: str | os.PathLike | None = None,
        num_iterations: int = 20,
        num_epochs: int = 1,
        batch_size: int = 16,
        seed: int = 42,
    ) -> None:
        if model_path is None:
            from metanlp.models import default_model_path

            model_path = default_model_path()
        self.model_path = Path(model_path)
        self.max_length, self.seed = int(max_length), int(seed)
        self.num_iterations, self.num_epochs = int(num_iterations), int(num_epochs)
        self.batch_size = int(batch_size)

    def describe(self) -> dict[str, Any]:
        """Settings and caveats, stored with the benchmark results."""
        import setfit

        return {
            "setfit_version": setfit.__version__,
            "body": str(self.model_path),
            "max_seq_length": self.max_length,
            "num_iterations": self.num_iterations,
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "head": "LogisticRegression (SetFit default)",
            "caveat": "pair order comes from SetFit's fixed seed, the same for every episode",
        }

    def query_logits(self, episode: Any) -> torch.Tensor:
        if episode.kind != "classification":
            raise ValueError(
                f"SetFit scores text classification only; episode {episode.task!r} is "
                f"{episode.kind!r}."
            )
        from datasets import Dataset
        from setfit import SetFitModel, Trainer

        model = SetFitModel.from_pretrained(str(self.model_path))
        # TrainingArguments.max_length does not reach the contrastive phase: cap the body itself.
        model.model_body.max_seq_length = self.max_length
        support = Dataset.from_dict(
            {
                "text": list(episode.support_inputs),
                "label": [int(t) for t in episode.support_targets],
            }
        )
        with tempfile.TemporaryDirectory(prefix="setfit-") as tmp:
            trainer = Trainer(model=model, args=self._arguments(tmp), train_dataset=support)
            trainer.train()
        proba = model.predict_proba(list(episode.query_inputs), as_numpy=True)
        proba = torch.as_tensor(proba, dtype=torch.float32)
        classes = [int(c) for c in getattr(model.model_head, "classes_", range(episode.n_way))]
        if classes != list(range(episode.n_way)):
            # Only classes seen in the support get a column; order them as the episode's labels.
            full = torch.zeros(proba.shape[0], episode.n_way)
            full[:, classes] = proba
            proba = full
        return proba.clamp_min(1e-12).log()

    def _arguments(self, output_dir: str) -> Any:
        from setfit import TrainingArguments

        wanted = {
            "output_dir": output_dir,
            "num_iterations": self.num_iterations,
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "max_length": self.max_length,
            "report_to": "none",
            "save_strategy": "no",
            "evaluation_strategy": "no",
            "eval_strategy": "no",
            "show_progress_bar": False,
        }
        # Keyword names moved between SetFit releases (evaluation_ vs eval_strategy): pass the
        # ones this version has.
        accepted = inspect.signature(TrainingArguments).parameters
        if "eval_strategy" in accepted:
            wanted.pop("evaluation_strategy")  # deprecated alias; passing both warns
        return TrainingArguments(**{k: v for k, v in wanted.items() if k in accepted})
