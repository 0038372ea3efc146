"""`TrainableAlgorithm`: everything the trainer (and its validation and checkpoints) asks of an
algorithm, and nothing more. Every `metanlp.meta.MetaAlgorithm` satisfies it; a new algorithm
that does can be meta-trained without touching the trainer (see ``docs/algorithms.md``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from metanlp.episodes.types import Episode


@runtime_checkable
class TrainableAlgorithm(Protocol):
    """The trainer's contract with a meta-learning algorithm.

    Attributes:
        model (`FewShotModel`): The model it adapts; the trainer moves it to the device and
            builds the episode collator from its tokenizer.
        batches_tasks (`bool`): ``True`` when `meta_backward_batch` takes a meta-batch in one
            pass (the trainer then draws its episodes together); ``False``: task by task.
    """

    model: Any

    @property
    def batches_tasks(self) -> bool: ...

    def named_meta_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Name and tensor of everything the outer optimiser updates."""
        ...

    def meta_backward(
        self, episode: Episode, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        """Add ``scale ×`` the task's meta-gradient to ``.grad``; ``grad_scale`` is the fp16 loss
        scale for the inner loop (``None``: none). Returns the task's metrics."""
        ...

    def meta_backward_batch(
        self, episodes: list[Episode], scale: float = 1.0, *, grad_scale: float | None = None
    ) -> list[dict[str, float]]:
        """`meta_backward` of several tasks (used when `batches_tasks`)."""
        ...

    def set_epoch(self, epoch: int) -> None:
        """Annealing by epoch (MAML++); a no-op elsewhere."""
        ...

    def adapt(self, support: Mapping[str, Tensor], n_way: int) -> Any:
        """Fast weights for a support set (meta-validation)."""
        ...

    def predict_logits(self, fast: Any, batch: Mapping[str, Tensor], n_way: int) -> Tensor:
        """Query logits under the fast weights (meta-validation)."""
        ...

    def state_dict(self) -> dict[str, Tensor]:
        """The algorithm's own learned tensors beyond the model's (learned inner rates, ...)."""
        ...

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None: ...

    def to(self, device: torch.device | str) -> Any: ...


PROTOCOL_MEMBERS = sorted(
    {n for n in vars(TrainableAlgorithm) if not n.startswith("_")}
    | set(TrainableAlgorithm.__annotations__)
)
"""The names `TrainableAlgorithm` requires, read from the Protocol itself."""


def check_trainable(algorithm: Any) -> TrainableAlgorithm:
    """``algorithm`` when it meets the contract; a `TypeError` naming what it lacks otherwise."""
    missing = [name for name in PROTOCOL_MEMBERS if not hasattr(algorithm, name)]
    if missing:
        raise TypeError(
            f"{type(algorithm).__name__} cannot be meta-trained: it lacks {missing} of the "
            "trainer's contract (metanlp.training.contract.TrainableAlgorithm); subclass "
            "metanlp.meta.MetaAlgorithm to get them."
        )
    return algorithm
