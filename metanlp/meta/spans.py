"""Spans for decomposed few-shot NER: type-agnostic B/I/O tags, a Viterbi pass, span features.

The decomposed learner (`metanlp.meta.decomposed`) first tags every word ``O``, ``B`` or ``I``
of "any entity", decodes the tags with a Viterbi pass whose transition scores are estimated
from training corpora (StructShot, Yang & Katiyar 2020), so that no ``I`` follows an ``O`` or
opens a sentence, and then types each decoded span. Everything here works on word positions
(the first sub-token of each word), never on continuation sub-tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

IGNORE_INDEX = -100
BIO_TAGS = ("O", "B", "I")
O, B, I = 0, 1, 2  # noqa: E741  (the tag names of the scheme)
FORBIDDEN = -1e4
"""Log score of an impossible move (``O → I``, start ``→ I``): finite, so sums stay finite."""


def io_to_bio(labels: Tensor) -> Tensor:
    """Type-agnostic B/I/O ids from episode IO tag ids, row by row over labelled positions.

    A labelled position (label ``!= -100``) with a type (``> 0``) is ``B`` when the previous
    labelled position of its row has another tag, else ``I``; ``-100`` stays ``-100``. Two
    adjacent mentions of one type merge (IO cannot tell them apart).

    Example:
        ```python
        >>> io_to_bio(torch.tensor([[-100, 1, -100, 1, 0, 2, 3, -100]]))
        tensor([[-100,    1, -100,    2,    0,    1,    1, -100]])
        ```
    """
    out = torch.full_like(labels, IGNORE_INDEX)
    for r, row in enumerate(labels.tolist()):
        previous = 0
        for t, tag in enumerate(row):
            if tag == IGNORE_INDEX:
                continue
            out[r, t] = O if tag == 0 else (I if tag == previous else B)
            previous = tag
    return out


def tags_to_bio(tags: Sequence[str]) -> list[int]:
    """B/I/O ids of one sentence's tag strings: IOB2 (``B-x``/``I-x``), IO (bare types) or mixed.

    A bare type opens a mention when the previous word has another tag (an IO run is one mention);
    an ``I-`` tag after ``O`` is read as ``B`` (IOB1).

    Example:
        ```python
        >>> tags_to_bio(["O", "B-person", "I-person", "B-person", "loc", "loc", "O", "I-x"])
        [0, 1, 2, 1, 1, 2, 0, 1]
        ```
    """
    out: list[int] = []
    previous = "O"
    for tag in tags:
        if tag == "O":
            out.append(O)
        elif tag.startswith("B-"):
            out.append(B)
        elif tag.startswith("I-"):
            out.append(I if previous != "O" and previous[2:] == tag[2:] else B)
        else:
            out.append(I if previous == tag else B)
        previous = tag
    return out


def transition_counts(sequences: Iterable[Sequence[int]]) -> Tensor:
    """``(4, 3)`` float64 counts: row 0 the first tags, rows 1-3 the moves from ``O``, ``B``, ``I``.

    Example:
        ```python
        >>> transition_counts([[1, 2, 0]]).tolist()
        [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
        ```
    """
    counts = torch.zeros(4, 3, dtype=torch.float64)
    for seq in sequences:
        if len(seq) == 0:
            continue
        counts[0, seq[0]] += 1
        for a, b in zip(seq[:-1], seq[1:], strict=True):
            counts[1 + a, b] += 1
    return counts


def transitions_from_counts(counts: Tensor, smoothing: float = 1.0) -> tuple[Tensor, Tensor]:
    """Log start ``(3,)`` and transition ``(3, 3)`` probabilities from `transition_counts`.

    Add-``smoothing`` estimates; ``O → I`` and start ``→ I`` are impossible whatever the counts
    say (`FORBIDDEN`).
    """
    if smoothing < 0:
        raise ValueError(f"smoothing={smoothing} must be >= 0.")
    allowed = torch.ones(4, 3, dtype=torch.bool)
    allowed[0, I] = allowed[1 + O, I] = False
    counts = torch.where(allowed, counts.double() + smoothing, torch.zeros_like(counts.double()))
    total = counts.sum(-1, keepdim=True)
    if bool((total == 0).any()):
        raise ValueError("No counts and no smoothing: give sequences or smoothing > 0.")
    logp = torch.log(counts / total)
    logp = torch.where(allowed, logp, torch.full_like(logp, FORBIDDEN)).float()
    return logp[0], logp[1:]


def estimate_transitions(
    sequences: Iterable[Sequence[int]], smoothing: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Log start and transition probabilities of B/I/O sequences, add-``smoothing`` estimates.

    Args:
        sequences: B/I/O ids per sentence (see `tags_to_bio`).
        smoothing (`float`, defaults to 1.0): Added to every allowed count.

    Returns:
        ``(start, transitions)``: ``(3,)`` and ``(3, 3)`` float32 log probabilities, rows ``from``;
        ``O → I`` and start ``→ I`` are `FORBIDDEN`.

    Example:
        ```python
        >>> start, trans = estimate_transitions([[0, 1, 2, 0], [1, 0]])
        >>> start.exp()  # O: (1+1)/(2+2), B: (1+1)/(2+2), I: impossible
        tensor([0.5000, 0.5000, 0.0000])
        ```
    """
    return transitions_from_counts(transition_counts(sequences), smoothing)


def uniform_transitions() -> tuple[Tensor, Tensor]:
    """Every allowed move equally likely (the decoder before any corpus is seen)."""
    return estimate_transitions([], smoothing=1.0)


def viterbi(emissions: Tensor, start: Tensor, transitions: Tensor) -> list[int]:
    """The tag path maximising ``start[y_0] + Σ_t emissions[t, y_t] + Σ_t transitions[y_{t-1}, y_t]``.

    Args:
        emissions (`Tensor`): ``(L, C)`` per-word scores (e.g. log probabilities).
        start (`Tensor`): ``(C,)`` scores of the first tag.
        transitions (`Tensor`): ``(C, C)`` scores, rows ``from``, columns ``to``.

    Returns:
        `list[int]` of length ``L`` (empty for ``L = 0``); ties go to the lower tag id.

    Example:
        ```python
        >>> start, trans = uniform_transitions()
        >>> viterbi(torch.log(torch.tensor([[0.4, 0.1, 0.5], [0.1, 0.1, 0.8]])), start, trans)
        [1, 2]
        ```
    """
    length, classes = emissions.shape
    if length == 0:
        return []
    if start.shape != (classes,) or transitions.shape != (classes, classes):
        raise ValueError(
            f"start {tuple(start.shape)} / transitions {tuple(transitions.shape)} do not fit "
            f"{classes} tags; expected ({classes},) and ({classes}, {classes})."
        )
    emissions, start, transitions = emissions.double(), start.double(), transitions.double()
    score = start + emissions[0]
    back = []
    for t in range(1, length):
        total = score.unsqueeze(1) + transitions  # (from, to)
        score, arg = total.max(dim=0)
        score = score + emissions[t]
        back.append(arg)
    path = [int(score.argmax())]
    for arg in reversed(back):
        path.append(int(arg[path[-1]]))
    return path[::-1]


def path_score(path: Sequence[int], emissions: Tensor, start: Tensor, transitions: Tensor) -> float:
    """The score `viterbi` maximises, of one given path (for checks and tests)."""
    if not path:
        return 0.0
    total = float(start[path[0]]) + sum(float(emissions[t, y]) for t, y in enumerate(path))
    return total + sum(float(transitions[a, b]) for a, b in zip(path[:-1], path[1:], strict=True))


def bio_spans(tags: Sequence[int]) -> list[tuple[int, int]]:
    """Mentions ``[start, end)`` of a B/I/O sequence; an ``I`` without a mention open starts one.

    Example:
        ```python
        >>> bio_spans([0, 1, 2, 1, 0, 2, 2])
        [(1, 3), (3, 4), (5, 7)]
        ```
    """
    spans: list[tuple[int, int]] = []
    begin = None
    for t, tag in enumerate(list(tags) + [O]):
        if begin is not None and tag != I:
            spans.append((begin, t))
            begin = None
        if tag == B or (tag == I and begin is None):
            begin = t
    return spans


def join_adjacent(spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge mentions that touch (one ends where the next begins) into one.

    Example:
        ```python
        >>> join_adjacent([(1, 3), (3, 4), (5, 7)])
        [(1, 4), (5, 7)]
        ```
    """
    joined: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if joined and joined[-1][1] == a:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    return joined


def io_spans(ids: Sequence[int]) -> list[tuple[int, int, int]]:
    """Mentions ``(tag id, start, end)`` of an IO id sequence: maximal runs of one non-zero id.

    Example:
        ```python
        >>> io_spans([0, 2, 2, 1, 0, 1])
        [(2, 1, 3), (1, 3, 4), (1, 5, 6)]
        ```
    """
    spans = []
    for start, end in bio_spans(
        [O if y == 0 else (I if t and ids[t - 1] == y else B) for t, y in enumerate(ids)]
    ):
        spans.append((int(ids[start]), start, end))
    return spans


def span_means(features: Tensor, spans: Sequence[tuple[int, int]]) -> Tensor:
    """``(S, H)`` span representations: the mean of the word features ``features[start:end]``.

    Args:
        features (`Tensor`): ``(L, H)`` one feature per word (its first sub-token's state).
        spans: ``[start, end)`` word spans.
    """
    if not spans:
        return features.new_zeros(0, features.shape[-1])
    index = torch.tensor([t for s, e in spans for t in range(s, e)], device=features.device)
    owner = torch.tensor(
        [i for i, (s, e) in enumerate(spans) for _ in range(s, e)], device=features.device
    )
    sums = features.new_zeros(len(spans), features.shape[-1]).index_add(0, owner, features[index])
    lengths = torch.tensor([e - s for s, e in spans], device=features.device)
    return sums / lengths.to(features.dtype).unsqueeze(-1)
