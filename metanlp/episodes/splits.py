"""Disjoint meta-train / meta-validation / meta-test splits of classes, entity types or domains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from metanlp.episodes.sources import NERSource

SPLITS = ("train", "val", "test")


def split_names(
    names: Sequence[str],
    *,
    fractions: Sequence[float] | Mapping[str, float] | None = None,
    explicit: Mapping[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> dict[str, list[str]]:
    """Split class names (or entity types, or domain values) into disjoint sets.

    Give either ``explicit`` lists (checked: known names, no name in two splits) or ``fractions``
    (a seeded shuffle of the sorted names, cut by the fractions; every split with a positive
    fraction gets at least one name when there are enough).

    Args:
        names (`Sequence[str]`): All available names.
        fractions (`Sequence[float]` or `Mapping[str, float]`, *optional*): Sizes of
            ``("train", "val", "test")`` (a sequence) or of named splits; must sum to at most 1.
        explicit (`Mapping[str, Sequence[str]]`, *optional*): Split name -> names.
        seed (`int`, defaults to 0): Seed of the shuffle for ``fractions``.

    Example:
        ```python
        >>> split_names(["a", "b", "c", "d", "e"], fractions=(0.6, 0.2, 0.2), seed=0)
        {'train': [...3 names...], 'val': [...1...], 'test': [...1...]}
        >>> split_names(["a", "b", "c"], explicit={"train": ["a", "b"], "test": ["c"]})
        {'train': ['a', 'b'], 'test': ['c']}
        ```
    """
    names = list(dict.fromkeys(str(n) for n in names))
    if (fractions is None) == (explicit is None):
        raise ValueError("Give exactly one of fractions=... or explicit=... to split_names.")
    if explicit is not None:
        out = {split: [str(n) for n in members] for split, members in explicit.items()}
        known = set(names)
        owner: dict[str, str] = {}
        for split, members in out.items():
            unknown = [n for n in members if n not in known]
            if unknown:
                raise ValueError(f"Split {split!r} names unknown {unknown}; available: {names}.")
            for n in members:
                if n in owner:
                    raise ValueError(f"{n!r} is in both split {owner[n]!r} and split {split!r}.")
                owner[n] = split
        return out
    assert fractions is not None
    if not isinstance(fractions, Mapping):
        if len(fractions) > len(SPLITS):
            raise ValueError(
                f"fractions={list(fractions)}: at most {len(SPLITS)} values ({SPLITS})."
            )
        fractions = dict(zip(SPLITS, fractions, strict=False))
    values = np.asarray(list(fractions.values()), dtype=float)
    if (values < 0).any() or values.sum() > 1 + 1e-9:
        raise ValueError(f"fractions={dict(fractions)} must be >= 0 and sum to at most 1.")
    order = np.random.default_rng(seed).permutation(sorted(names)).tolist()
    exact = values * len(order)
    counts = np.floor(exact).astype(int)
    # Hand the names lost to flooring back to the largest remainders (within the total asked).
    budget = int(round(values.sum() * len(order))) - int(counts.sum())
    for i in np.argsort(-(exact - counts), kind="stable")[: max(budget, 0)]:
        counts[i] += 1
    for i in np.flatnonzero((values > 0) & (counts == 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    out, start = {}, 0
    for split, count in zip(fractions, counts.tolist(), strict=True):
        out[split] = order[start : start + count]
        start += count
    return out


def cross_dataset_types(
    train: NERSource, test: NERSource, *, disjoint: bool = True
) -> dict[str, list[str]]:
    """Cross-dataset type split: meta-train on ``train``'s types, meta-test on ``test``'s.

    With ``disjoint=True`` (default) the test types that also occur in ``train`` are left out, so
    no type seen in meta-training is scored at meta-test time.
    """
    test_types = [t for t in test.types if not (disjoint and t in set(train.types))]
    if not test_types:
        raise ValueError(
            f"Every type of {test.name!r} ({test.types}) also occurs in {train.name!r}; "
            "nothing is left to meta-test on. Use disjoint=False or other datasets."
        )
    return {"train": list(train.types), "test": test_types}
