"""Scoring methods on one fixed set of test episodes: metrics, confidence intervals, tables.

Every method (a meta-trained learner or a baseline, see `metanlp.baselines`) maps an episode to
query logits; `evaluate` builds each episode once and gives the *same* episode to every method,
so the comparison is paired. Text classification is scored by accuracy and macro-F1; NER by
entity-level micro-F1 (seqeval, strict IOB2) on words, after mapping the first-sub-token
predictions back to words. Each metric is reported as the mean over episodes with a 95%
Student-t confidence interval, and every per-episode value is kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from metanlp.baselines import EpisodeMethod
from metanlp.episodes.tags import episode_word_tags
from metanlp.episodes.types import Episode
from metanlp.metrics.functional import accuracy, entity_scores, macro_f1, mean_ci

logger = logging.getLogger(__name__)

GPU_EPISODES = 600
"""Test episodes on a GPU: the usual count in the few-shot literature."""
CPU_EPISODES = 20
"""Test episodes on CPU: enough for a rough CI within minutes per method."""
RESULTS_FILE = "results.json"
TABLE_FILE = "comparison.md"


def default_episode_count(device: str | torch.device | None = None) -> int:
    """600 episodes on a GPU, `CPU_EPISODES` on CPU (sized for minutes per method)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return GPU_EPISODES if torch.device(device).type == "cuda" else CPU_EPISODES


def episode_metrics(episode: Episode, logits: torch.Tensor) -> dict[str, float]:
    """Score one episode's query logits.

    Classification: ``accuracy`` and ``macro_f1`` over the episode's N classes. NER: word-level
    tags from the first sub-token of each word, then ``f1``, ``precision``, ``recall`` at the
    entity level (strict IOB2; IO tags are converted to IOB2 first).
    """
    if episode.kind == "classification":
        expected = (len(episode.query_targets), episode.n_way)
        if tuple(logits.shape) != expected:
            raise ValueError(f"Query logits have shape {tuple(logits.shape)}; expected {expected}.")
        predictions = logits.argmax(-1).tolist()
        references = list(episode.query_targets)
        return {
            "accuracy": accuracy(predictions, references),
            "macro_f1": macro_f1(predictions, references, labels=range(episode.n_way)),
        }
    if logits.dim() != 3 or logits.shape[-1] != episode.num_labels:
        raise ValueError(
            f"NER query logits have shape {tuple(logits.shape)}; expected (Q, T, "
            f"{episode.num_labels}) for tags {episode.tag_names}."
        )
    predicted = episode_word_tags(episode, logits, split="query")
    scores = entity_scores(predicted, episode.query_targets)
    return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"]}


def evaluate(
    methods: Mapping[str, EpisodeMethod],
    episodes: Sequence[Episode],
    *,
    output_dir: str | os.PathLike | None = None,
    episode_set: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Score several methods on identical episodes; save per-episode values and a table.

    Args:
        methods (`Mapping[str, EpisodeMethod]`): Name -> object with ``query_logits(episode)``
            (a `metanlp.api.MetaLearner`, `FineTuneBaseline`, `FrozenPrototypes`, ...).
        episodes (`Sequence[Episode]`): The fixed test episodes, e.g. from
            `metanlp.episodes.load_episodes` (see `evaluate_file`).
        output_dir (`str` or `os.PathLike`, *optional*): Where to write ``results.json``
            (summaries and every per-episode value) and ``comparison.md``.
        episode_set (`str`, *optional*): Name of the episode set, recorded with the results.
        seed (`int`, defaults to 0): Torch seed set before each (episode, method), so a method
            with randomness gives the same numbers whatever the other methods are.
        progress (`bool`, defaults to True): Show a progress bar.

    Returns:
        `list[dict]`: One item per method: ``{"method", "kind", "episode_set", "n_way",
        "summary": {metric: {"mean", "ci", "std", "n"}}, "episodes": [{"index", "task",
        metric: value, ...}], "seconds"}``.

    Example:
        ```python
        >>> results = evaluate({"maml": learner, "prototypes": FrozenPrototypes(model)},
        ...                    episodes, output_dir="eval/")
        >>> print(comparison_table(results))
        ```
    """
    if not methods:
        raise ValueError("evaluate needs at least one method.")
    if not episodes:
        raise ValueError("evaluate needs at least one episode.")
    kinds = {e.kind for e in episodes}
    if len(kinds) != 1:
        raise ValueError(
            f"All episodes of one evaluation must be of one kind; got {sorted(kinds)}."
        )
    kind = kinds.pop()
    per_method: dict[str, list[dict[str, Any]]] = {name: [] for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    iterator: Any = enumerate(episodes)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(episodes), desc="evaluating", unit="episode")
    for i, episode in iterator:
        index = (
            episode.spec.index if episode.spec is not None and episode.spec.index is not None else i
        )
        content = episode_content_hash(episode)
        for name, method in methods.items():
            torch.manual_seed(seed + i)
            start = time.perf_counter()
            logits = method.query_logits(episode)
            seconds[name] += time.perf_counter() - start
            scores = episode_metrics(episode, logits.detach().float().cpu())
            per_method[name].append(
                {"index": index, "task": episode.task, "content": content, **scores}
            )
    results = []
    for name, rows in per_method.items():
        metric_names = [k for k in rows[0] if k not in EPISODE_KEYS]
        summary = {m: mean_ci([r[m] for r in rows]) for m in metric_names}
        results.append(
            {
                "method": name,
                "kind": kind,
                "episode_set": episode_set,
                "n_way": episodes[0].n_way,
                "summary": summary,
                "episodes": rows,
                "seconds": round(seconds[name], 3),
            }
        )
    if output_dir is not None:
        save_results(results, output_dir)
    return results


def evaluate_file(
    methods: Mapping[str, EpisodeMethod],
    path: str | os.PathLike,
    datasets: Any,
    tokenizer: Any,
    *,
    n_episodes: int | None = None,
    max_length: int | None = None,
    output_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """`evaluate` on the first `n_episodes` of an episode file (see `metanlp.episodes.save_episodes`).

    Args:
        path (`str` or `os.PathLike`): The episode file; its datasets' fingerprints are checked.
        datasets (`Dataset` or `Mapping[str, Dataset]`): The data the file was drawn from.
        tokenizer: The tokenizer of the models evaluated.
        n_episodes (`int`, *optional*): Defaults to `default_episode_count` (600 on a GPU, fewer
            on CPU); the count used is logged and printed. Never more than the file holds.
        max_length (`int`, *optional*): Truncation; defaults to the file's own setting.
    """
    from metanlp.episodes.io import load_episode_specs

    specs, _ = load_episode_specs(path)
    wanted = default_episode_count(device) if n_episodes is None else int(n_episodes)
    if wanted < 1:
        raise ValueError(f"n_episodes={n_episodes}; evaluate at least 1 episode.")
    n = min(wanted, len(specs))
    why = (
        ""
        if n_episodes is not None
        else (
            f" (default on {'GPU' if n == GPU_EPISODES else 'CPU'}; "
            f"{GPU_EPISODES} on a GPU; pass n_episodes, or --n-episodes to `metanlp evaluate`, "
            "to change)"
        )
    )
    message = (
        f"Evaluating {len(methods)} method(s) on {n} of the {len(specs)} episodes in {path}{why}."
    )
    logger.info(message)
    if progress:
        print(message)
    episodes = _load_first(path, n, datasets, tokenizer, max_length)
    return evaluate(
        methods,
        episodes,
        output_dir=output_dir,
        episode_set=Path(path).name,
        seed=seed,
        progress=progress,
    )


def _load_first(path: Any, n: int, datasets: Any, tokenizer: Any, max_length: int | None) -> list:
    """Build only the first `n` episodes of a file (a 600-episode file on CPU would otherwise
    tokenize every episode)."""
    from metanlp.episodes.io import load_episodes

    return load_episodes(path, datasets, tokenizer=tokenizer, max_length=max_length, limit=n)


def save_results(results: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike) -> Path:
    """Write ``results.json`` (all values, NaN as null) and ``comparison.md`` into `output_dir`."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(nan_to_none(list(results)), indent=2), encoding="utf-8")
    os.replace(tmp, path)
    table = comparison_table(results)
    if len(results) > 1 and results[0]["summary"]:
        metric = next(iter(results[0]["summary"]))
        table += "\n\nPaired per episode:\n\n" + paired_table(results, metric)
    (out / TABLE_FILE).write_text(table + "\n", encoding="utf-8")
    return path


def load_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read results written by `save_results` (a ``results.json`` file or its folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    results = json.loads(path.read_text(encoding="utf-8"))
    for r in results:
        for stat in r["summary"].values():
            if stat["ci"] is None:
                stat["ci"] = float("nan")
    return results


def comparison_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: one row per method, mean ± 95% CI half-width per metric, in %.

    Example:
        ```text
        | method | episodes | accuracy | macro_f1 |
        |---|---|---|---|
        | protonet | 20 | 71.20 ± 3.10 | 69.80 ± 3.40 |
        ```
    """
    if not results:
        return ""
    counts = {r["summary"][next(iter(r["summary"]))]["n"] for r in results if r["summary"]}
    if len(counts) > 1:
        raise ValueError(
            f"Methods were scored on different numbers of episodes ({sorted(counts)}); a "
            "comparison table needs every method on the same episodes."
        )
    metrics: list[str] = []
    for r in results:
        metrics += [m for m in r["summary"] if m not in metrics]
    rows = [
        "| method | episodes | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for r in results:
        cells = [_fmt(r["summary"][m]) if m in r["summary"] else "–" for m in metrics]
        n = next(iter(r["summary"].values()))["n"] if r["summary"] else 0
        rows.append(f"| {r['method']} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


EPISODE_KEYS = ("index", "task", "content")
"""Per-episode result keys that are not metrics."""


def episode_content_hash(episode: Episode) -> str:
    """A short hash of what an episode holds (its texts or words, labels and label order): two
    results with the same episode index but different hashes were scored on different data."""
    payload = [
        episode.label_names, episode.support_inputs, episode.support_targets,
        episode.query_inputs, episode.query_targets,
    ]  # fmt: skip
    return hashlib.sha1(json.dumps(payload, default=str).encode("utf-8")).hexdigest()[:16]


def paired_difference(
    a: Mapping[str, Any], b: Mapping[str, Any], metric: str
) -> dict[str, float] | None:
    """Per-episode ``a − b`` on the episodes both were scored on: mean and 95% t-interval.

    Methods scored on the same episodes are paired; the interval of the per-episode differences
    is much narrower than the two methods' own intervals, since most of the spread is episode
    difficulty that both share.

    Args:
        a, b: Results of `evaluate` (``{"method", "episodes": [{"index", metric, ...}], ...}``).
        metric (`str`): e.g. ``"accuracy"`` or ``"f1"``.

    Returns:
        ``{"mean", "ci", "std", "n"}`` as `mean_ci` gives them, or ``None`` when no episode
        index is shared or a method lacks the metric.

    Example:
        ```python
        >>> d = paired_difference(results[0], results[2], "accuracy")
        >>> d["mean"] - d["ci"] > 0  # a is better, at 95%
        ```
    """
    content = {e["index"]: e.get("content") for e in a["episodes"]}
    clash = [
        e["index"]
        for e in b["episodes"]
        if None not in (content.get(e["index"]), e.get("content"))
        and content[e["index"]] != e["content"]
    ]
    if clash:
        raise ValueError(
            f"{a['method']} and {b['method']} were scored on different episodes under the same "
            f"indices {clash[:5]} (the texts or labels differ: another corpus build or episode "
            "file). Score both on the same episode file and corpus build before pairing them."
        )
    scores = {e["index"]: e.get(metric) for e in a["episodes"]}
    diffs = [
        scores[e["index"]] - e[metric]
        for e in b["episodes"]
        if scores.get(e["index"]) is not None and e.get(metric) is not None
    ]
    return mean_ci(diffs) if diffs else None


def paired_table(results: Sequence[Mapping[str, Any]], metric: str) -> str:
    """Markdown: the first method minus each other one, paired per episode, in points (%).

    A difference whose interval excludes 0 is marked *significant*.
    """
    rows = [f"| {results[0]['method']} minus | episodes | {metric} difference | at 95% |",
            "|---|---|---|---|"]  # fmt: skip
    for other in results[1:]:
        d = paired_difference(results[0], other, metric)
        if d is None:
            continue
        sign = d["mean"] - d["ci"] > 0 or d["mean"] + d["ci"] < 0
        verdict = "significant" if sign else "interval includes 0"
        rows.append(f"| {other['method']} | {d['n']} | {_signed(d)} | {verdict} |")
    return "\n".join(rows)


def _signed(stat: Mapping[str, float]) -> str:
    mean, ci = 100 * stat["mean"], stat["ci"]
    return f"{mean:+.2f}" if ci != ci else f"{mean:+.2f} ± {100 * ci:.2f}"


def _fmt(stat: Mapping[str, float]) -> str:
    mean, ci = 100 * stat["mean"], stat["ci"]
    if ci is None or ci != ci:  # NaN: a single episode has no interval
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {100 * ci:.2f}"


def nan_to_none(value: Any) -> Any:
    """``value`` with every NaN float (in nested dicts and lists) replaced by ``None``, so that it
    is strict JSON (NaN is not)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value
