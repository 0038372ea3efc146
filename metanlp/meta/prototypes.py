"""Prototype math shared by ProtoNet and Proto-MAML.

A prototype ``c_n`` is the mean embedding of the support examples of class ``n`` (for NER: of
the support tokens tagged ``n``, ``O`` included, positions labelled ``-100`` ignored).
ProtoNet scores ``−‖f(x) − c_n‖²``; Proto-MAML turns the prototypes into a linear head
``W_n = 2 c_n, b_n = −‖c_n‖²`` whose logits differ from those scores by ``−‖f(x)‖²``, the same
for every class, hence the same softmax.
"""

from __future__ import annotations

import torch
from torch import Tensor

IGNORE_INDEX = -100
PROTOTYPES_KEY = "prototypes"
"""The key of ProtoNet's fast-weight dict, ``{"prototypes": (N, H)}``."""


def flatten_labelled(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the labelled rows: ``(B, H)``/``(B,)`` as is, ``(B, T, H)``/``(B, T)`` flattened.

    Positions with label ``-100`` (special tokens, padding, non-first sub-tokens) are dropped.
    """
    if features.dim() != labels.dim() + 1 or features.shape[:-1] != labels.shape:
        raise ValueError(
            f"features of shape {tuple(features.shape)} do not match labels of shape "
            f"{tuple(labels.shape)}; expected (B, H) with (B,) or (B, T, H) with (B, T)"
        )
    flat_features = features.reshape(-1, features.shape[-1])
    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE_INDEX
    return flat_features[keep], flat_labels[keep]


def class_prototypes(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean embedding per class, differentiable with respect to ``features``.

    Args:
        features (`Tensor`): ``(B, H)`` pooled or ``(B, T, H)`` per-token embeddings.
        labels (`Tensor`): ``(B,)`` or ``(B, T)`` episode labels in ``0..num_classes-1``, ``-100``
            where ignored.
        num_classes (`int`): number of classes ``N`` (prototype rows).

    Returns:
        ``(N, H)`` tensor of prototypes, in label order (any label permutation works).

    Raises:
        ValueError: when a class has no support example, or a label is out of range.

    Example:
        ```python
        >>> f = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0]])
        >>> class_prototypes(f, torch.tensor([1, 1, 0]), 2)
        tensor([[0., 4.],
                [1., 0.]])
        ```
    """
    rows, y = flatten_labelled(features, labels)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"support labels must lie in 0..{num_classes - 1} (or be {IGNORE_INDEX}); "
            f"found {sorted(set(y.tolist()) - set(range(num_classes)))}"
        )
    counts = torch.bincount(y, minlength=num_classes)
    empty = (counts == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(
            f"class(es) {empty} have no support example (counts per class: {counts.tolist()}); "
            "every one of the N classes needs at least one labelled support example or token"
        )
    sums = torch.zeros(num_classes, rows.shape[-1], dtype=rows.dtype, device=rows.device)
    sums = sums.index_add(0, y, rows)
    return sums / counts.to(rows.dtype).unsqueeze(-1)


def squared_euclidean_logits(features: Tensor, prototypes: Tensor) -> Tensor:
    """``−‖f(x) − c_n‖²`` for every example (or token) and class.

    Args:
        features (`Tensor`): ``(..., H)``.
        prototypes (`Tensor`): ``(N, H)``.

    Returns:
        ``(..., N)`` logits.
    """
    # The expanded form avoids a (..., N, H) difference tensor; clamp guards tiny negatives.
    f_sq = features.pow(2).sum(-1, keepdim=True)
    c_sq = prototypes.pow(2).sum(-1)
    cross = features @ prototypes.transpose(0, 1)
    return -(f_sq - 2 * cross + c_sq).clamp_min(0)


def prototype_head(prototypes: Tensor) -> tuple[Tensor, Tensor]:
    """Proto-MAML head from prototypes: ``W_n = 2 c_n``, ``b_n = −‖c_n‖²``.

    Returns:
        ``(weight, bias)`` of shapes ``(N, H)`` and ``(N,)``, ready for ``F.linear``, still
        attached to the prototypes' graph so the outer loop differentiates through them.
    """
    return 2 * prototypes, -prototypes.pow(2).sum(-1)
