"""Optional BIG-bench tasks, read straight from the ``bigbench==1.0.0`` sdist with ``tarfile``.

The package is never installed (its dependencies include tensorflow) and ``pip download
--no-deps bigbench==1.0.0`` fails while preparing metadata ("Distributions from PyPI cannot
declare direct URL dependencies"), so :func:`download_sdist` fetches the archive from the
package index's simple page and checks its sha256. Tasks carry a canary string: the folders
written under ``data/bigbench/`` must never be committed.

Each task example is ``{"input": ..., "target_scores": {label: score}}`` and its label is the
arg-max. Converters: :func:`convert_fixed_label_task` for any task whose examples all share one
label set, plus the four tasks in :data:`TASKS`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import tarfile
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset

from metanlp.corpora.common import BuildResult, CorpusError, build_corpus, dedupe, normalize_space
from metanlp.corpora.schema import (
    classification_features,
    iob2_tag_names,
    ner_features,
    plain_to_iob2,
    validate_classification,
    validate_ner,
)

SDIST_NAME = "bigbench-1.0.0.tar.gz"
SDIST_SHA256 = "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"
INDEX_URL = "https://pypi.org/simple"
TASK_ROOT = "bigbench/benchmark_tasks/"


def default_sdist_path() -> Path:
    """``$METANLP_BIGBENCH_SDIST``, else ``~/.cache/metanlp/bigbench-1.0.0.tar.gz``."""
    env = os.environ.get("METANLP_BIGBENCH_SDIST")
    return Path(env) if env else Path.home() / ".cache" / "metanlp" / SDIST_NAME


def find_sdist(path: str | os.PathLike | None = None) -> Path:
    """The sdist at ``path`` (or the default place); a clear error when it is absent."""
    sdist = Path(path) if path is not None else default_sdist_path()
    if not sdist.is_file():
        raise CorpusError(
            f"The bigbench sdist is not at {sdist}. Fetch it (358 MB) with "
            f"`python data_scripts/build_bigbench.py --download --sdist {sdist} ...`, or point "
            "--sdist / $METANLP_BIGBENCH_SDIST at a downloaded bigbench-1.0.0.tar.gz."
        )
    return sdist


def download_sdist(dest: str | os.PathLike, index_url: str = INDEX_URL) -> Path:
    """Download ``bigbench-1.0.0.tar.gz`` from a PEP 503 index to ``dest``; verify sha256."""
    dest = Path(dest)
    page = urllib.request.urlopen(f"{index_url.rstrip('/')}/bigbench/").read().decode("utf-8")
    match = re.search(
        r'href="([^"]*/' + re.escape(SDIST_NAME) + r')(?:#sha256=([0-9a-f]+))?"', page
    )
    if not match:
        raise CorpusError(f"{index_url}/bigbench/ lists no {SDIST_NAME}.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    with urllib.request.urlopen(match.group(1)) as resp, tmp.open("wb") as fh:
        while chunk := resp.read(1 << 20):
            digest.update(chunk)
            fh.write(chunk)
    if digest.hexdigest() != SDIST_SHA256:
        tmp.unlink()
        raise CorpusError(f"{SDIST_NAME} sha256 {digest.hexdigest()} != expected {SDIST_SHA256}.")
    tmp.rename(dest)
    return dest


def read_task_jsons(sdist: str | os.PathLike, patterns: Iterable[str]) -> dict[str, dict]:
    """``{task: task.json}`` for tasks matching the ``fnmatch`` patterns, in one pass.

    Args:
        sdist (`str` or `os.PathLike`): the archive.
        patterns (`Iterable[str]`): task paths under ``benchmark_tasks/`` such as
            ``"intent_recognition"`` or ``"bbq_lite_json/*_ambig"``.
    """
    patterns = list(patterns)
    found: dict[str, dict] = {}
    with tarfile.open(sdist, mode="r|gz") as archive:  # streaming: one sequential read
        for member in archive:
            name = member.name
            if not member.isfile() or not name.endswith("/task.json") or TASK_ROOT not in name:
                continue
            task = name.split(TASK_ROOT, 1)[1][: -len("/task.json")]
            if any(fnmatch.fnmatchcase(task, p) for p in patterns):
                found[task] = json.loads(archive.extractfile(member).read().decode("utf-8"))
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(t, p) for t in found)]
    if unmatched:
        raise CorpusError(f"{sdist} has no task matching {unmatched} under {TASK_ROOT}.")
    return found


def example_label(example: dict[str, Any], task: str) -> str | None:
    """Arg-max of ``target_scores``; ``None`` when the maximum is shared (ambiguous)."""
    scores = example.get("target_scores")
    if not isinstance(scores, dict) or not scores:
        raise CorpusError(
            f"{task}: example has no 'target_scores' (keys {sorted(example)}); only multiple-choice "
            "tasks convert to classification."
        )
    best = max(scores.values())
    winners = [k for k, v in scores.items() if v == best]
    return winners[0] if len(winners) == 1 else None


def _classification(
    name: str, texts: list[str], labels: list[str | None], dropped: dict[str, int]
) -> tuple[Dataset, dict[str, int]]:
    pairs = [(normalize_space(t), lab) for t, lab in zip(texts, labels, strict=True)]
    dropped["ambiguous_target"] = dropped.get("ambiguous_target", 0) + sum(
        lab is None for _, lab in pairs
    )
    dropped["empty_text"] = sum(bool(lab is not None and not t) for t, lab in pairs)
    pairs = [(t, lab) for t, lab in pairs if lab is not None and t]
    keep, dup = dedupe([t for t, _ in pairs], [lab for _, lab in pairs])
    dropped.update(dup)
    names = sorted({pairs[i][1] for i in keep})
    ds = Dataset.from_dict(
        {"text": [pairs[i][0] for i in keep], "label": [names.index(pairs[i][1]) for i in keep]},
        features=classification_features(names, with_domain=False),
    )
    validate_classification(ds, name)
    return ds, dropped


def convert_fixed_label_task(
    task_json: dict, name: str = "task", strip_prefix: str | None = None, fixed_labels: bool = True
) -> tuple[Dataset, dict[str, int]]:
    """Convert a multiple-choice task to ``text`` + ``label``.

    Args:
        task_json (`dict`): the parsed ``task.json``.
        name (`str`): used in error messages.
        strip_prefix (`str`, *optional*): removed from the start of every input.
        fixed_labels (`bool`, defaults to `True`): require every example to list the same
            choices (a fixed label set); ``False`` takes the arg-max whatever the choices.
    """
    examples = task_json.get("examples") or []
    if not examples:
        raise CorpusError(f"{name}: task.json has no examples.")
    if fixed_labels:
        keysets = {frozenset(ex.get("target_scores") or ()) for ex in examples}
        if len(keysets) != 1:
            raise CorpusError(
                f"{name}: examples list {len(keysets)} different choice sets, so it is not a "
                "fixed-label task; convert it with fixed_labels=False or a task-specific converter."
            )
    texts = []
    for ex in examples:
        text = str(ex.get("input", ""))
        texts.append(
            text[len(strip_prefix) :] if strip_prefix and text.startswith(strip_prefix) else text
        )
    return _classification(name, texts, [example_label(ex, name) for ex in examples], {})


def convert_intent_recognition(task_json: dict) -> tuple[Dataset, dict[str, int]]:
    """7 SNIPS intents; inputs lose their ``"Utterance: "`` prefix."""
    return convert_fixed_label_task(task_json, "intent_recognition", strip_prefix="Utterance: ")


def convert_language_identification(task_json: dict) -> tuple[Dataset, dict[str, int]]:
    """1,000 languages; each example lists its own 11 choices, which are ignored."""
    return convert_fixed_label_task(task_json, "language_identification", fixed_labels=False)


def convert_bbq_ambig(task_jsons: dict[str, dict]) -> tuple[Dataset, dict[str, int]]:
    """BBQ-lite ambiguous contexts; the label is the bias category (age, religion, ...).

    Args:
        task_jsons (`dict`): ``{"bbq_lite_json/<category>_ambig": task.json}``.
    """
    texts, labels = [], []
    for task, tj in sorted(task_jsons.items()):
        category = task.rsplit("/", 1)[-1].removesuffix("_ambig")
        for ex in tj.get("examples") or []:
            texts.append(str(ex.get("input", "")))
            labels.append(category)
    if not texts:
        raise CorpusError("bbq_lite_ambig: no examples in the given task files.")
    return _classification("bbq_lite_ambig", texts, labels, {})


def convert_sequence_labeling(
    task_json: dict, name: str = "task"
) -> tuple[Dataset, dict[str, int]]:
    """Tasks whose ``target`` gives one prefix-less tag per ``input.split()`` word, to IOB2."""
    sentences, dropped = [], {"length_mismatch": 0}
    for ex in task_json.get("examples") or []:
        tokens, tags = str(ex.get("input", "")).split(), str(ex.get("target", "")).split()
        if not tokens or len(tokens) != len(tags):
            dropped["length_mismatch"] += 1
            continue
        sentences.append((tokens, plain_to_iob2(tags)))
    keep, dup = dedupe([tuple(t) for t, _ in sentences], [tuple(g) for _, g in sentences])
    dropped.update(dup)
    sentences = [sentences[i] for i in keep]
    names = iob2_tag_names(t[2:] for _, tags in sentences for t in tags if t != "O")
    index = {n: i for i, n in enumerate(names)}
    ds = Dataset.from_dict(
        {
            "tokens": [t for t, _ in sentences],
            "ner_tags": [[index[g] for g in tags] for _, tags in sentences],
        },
        features=ner_features(names),
    )
    validate_ner(ds, name)
    return ds, dropped


LETTER_LABEL = re.compile(r"^\(?[A-Za-z0-9]\)?$")


def scan_fixed_label_tasks(
    task_jsons: dict[str, dict],
    *,
    min_per_label: int = 12,
    max_labels: int = 20,
    max_input_words: int = 200,
    min_english_share: float = 0.15,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Which BIG-bench tasks are few-shot classification tasks with a small, fixed label set.

    A task is *used* when every example scores the same label names (``target_scores`` with one
    key set), at most ``max_labels`` of them, the names are not option letters (``A``/``(b)``,
    whose meaning changes from example to example), the median input has at most
    ``max_input_words`` words, the inputs read as English (at least ``min_english_share`` of
    their words are English stop words: about 0.4 for English prose, under 0.05 for German,
    Polish, Chinese or encoded images, which the English MiniLM cannot read), and at least two
    labels have ``min_per_label`` unambiguous examples (labels with fewer are dropped from the
    task). Everything else is *skipped* with the reason.

    Args:
        task_jsons (`dict`): ``{task path: task.json}`` (see `read_task_jsons`).
        min_per_label (`int`, defaults to 12): Examples a label needs (K + Q of an episode).
        max_labels (`int`, defaults to 20): Larger label sets are not "small and fixed".
        max_input_words (`int`, defaults to 200): Longer inputs are reading tasks, not
            classification of a sentence.
        min_english_share (`float`, defaults to 0.15): See above; 0 keeps every language.

    Returns:
        ``(used, skipped)``: ``{task: {"labels": {label: count}, "examples": n}}`` and
        ``{task: reason}``.
    """
    used: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for task, tj in sorted(task_jsons.items()):
        examples = tj.get("examples") or []
        if not examples or any(not isinstance(ex.get("target_scores"), dict) for ex in examples):
            skipped[task] = "no target_scores (generative task)"
            continue
        keysets = {frozenset(ex["target_scores"]) for ex in examples}
        if len(keysets) != 1:
            skipped[task] = f"{len(keysets)} different choice sets (choices vary per example)"
            continue
        names = sorted(next(iter(keysets)))
        if len(names) > max_labels:
            skipped[task] = f"{len(names)} labels > {max_labels}"
            continue
        if all(LETTER_LABEL.match(n.strip()) for n in names):
            skipped[task] = f"labels are option letters {names}"
            continue
        words = sorted(len(str(ex.get("input", "")).split()) for ex in examples)
        if words[len(words) // 2] > max_input_words:
            skipped[task] = f"median input {words[len(words) // 2]} words > {max_input_words}"
            continue
        share = english_share(str(ex.get("input", "")) for ex in examples)
        if share < min_english_share:
            skipped[task] = f"not English (stop-word share {share:.2f} < {min_english_share})"
            continue
        counts = Counter(
            lab for lab in (example_label(ex, task) for ex in examples) if lab is not None
        )
        kept = {lab: n for lab, n in sorted(counts.items()) if n >= min_per_label}
        if len(kept) < 2:
            skipped[task] = (
                f"fewer than 2 labels with >= {min_per_label} examples ({dict(sorted(counts.items()))})"
            )
            continue
        used[task] = {"labels": kept, "examples": int(sum(kept.values()))}
    return used, skipped


def english_share(texts: Iterable[str]) -> float:
    """The share of the words of ``texts`` that are English stop words."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = [w.lower() for text in texts for w in re.findall(r"\w+", text)]
    return sum(w in ENGLISH_STOP_WORDS for w in words) / max(len(words), 1)


def convert_scanned_task(
    task_json: dict, name: str, labels: Iterable[str]
) -> tuple[Dataset, dict[str, int]]:
    """A task `scan_fixed_label_tasks` kept, restricted to its ``labels`` (the frequent ones)."""
    keep = set(labels)
    examples = task_json.get("examples") or []
    texts = [str(ex.get("input", "")) for ex in examples]
    raw = [example_label(ex, name) for ex in examples]
    rare = sum(lab is not None and lab not in keep for lab in raw)
    labs = [lab if lab in keep else None for lab in raw]
    ds, dropped = _classification(name, texts, labs, {})
    dropped["ambiguous_target"] = dropped.get("ambiguous_target", 0) - rare
    dropped["rare_label"] = rare
    return ds, dropped


# name -> (task patterns read from the sdist, converter over {task: task.json})
TASKS: dict[
    str, tuple[tuple[str, ...], Callable[[dict[str, dict]], tuple[Dataset, dict[str, int]]]]
] = {
    "language_identification": (
        ("language_identification",),
        lambda tj: convert_language_identification(tj["language_identification"]),
    ),
    "intent_recognition": (
        ("intent_recognition",),
        lambda tj: convert_intent_recognition(tj["intent_recognition"]),
    ),
    "bbq_lite_ambig": (("bbq_lite_json/*_ambig",), convert_bbq_ambig),
    "polish_sequence_labeling": (
        ("polish_sequence_labeling",),
        lambda tj: convert_sequence_labeling(
            tj["polish_sequence_labeling"], "polish_sequence_labeling"
        ),
    ),
}


def build(
    tasks: Iterable[str],
    data_dir: str | os.PathLike,
    sdist: str | os.PathLike | None = None,
    *,
    force: bool = False,
) -> list[BuildResult]:
    """Build BIG-bench tasks into ``data_dir/bigbench/<task>``, reading the sdist once.

    Args:
        tasks (`Iterable[str]`): names in :data:`TASKS`, or any fixed-label task directory
            name in the sdist (converted by :func:`convert_fixed_label_task`).
        data_dir (`str` or `os.PathLike`): the data root, e.g. ``data``.
        sdist (`str` or `os.PathLike`, *optional*): the archive; see :func:`find_sdist`.
        force (`bool`, defaults to `False`): rebuild even if up to date.
    """
    archive = find_sdist(sdist)
    specs = {
        t: TASKS.get(t) or ((t,), lambda tj, t=t: convert_fixed_label_task(tj[t], t)) for t in tasks
    }
    cache: dict[str, dict] = {}

    def jsons_for(patterns: tuple[str, ...]) -> dict[str, dict]:
        if not cache:  # first stale task: read every requested task in one pass
            cache.update(read_task_jsons(archive, [p for pats, _ in specs.values() for p in pats]))
        return {k: v for k, v in cache.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}

    results = []
    for task, (patterns, convert) in specs.items():
        results.append(
            build_corpus(
                f"bigbench/{task}",
                Path(data_dir) / "bigbench" / task,
                lambda patterns=patterns, convert=convert: convert(jsons_for(patterns)),
                source={
                    "sdist": archive.name,
                    "bytes": archive.stat().st_size,
                    "tasks": list(patterns),
                },
                force=force,
            )
        )
    return results


FAMILIES_FILE = "families.json"


def build_families(
    data_dir: str | os.PathLike,
    sdist: str | os.PathLike | None = None,
    *,
    force: bool = False,
    **scan_options: Any,
) -> tuple[list[BuildResult], dict[str, Any]]:
    """Find every fixed-label task of the sdist (`scan_fixed_label_tasks`) and build each one.

    Writes ``data_dir/bigbench/<task>`` per used task and ``data_dir/bigbench/families.json``
    (``{"used": {task: labels and counts}, "skipped": {task: reason}, "options": ...}``), which
    `fixed_label_families` reads back. Reads the sdist once (about a minute).
    """
    archive = find_sdist(sdist)
    task_jsons = read_task_jsons(archive, ["*"])
    used, skipped = scan_fixed_label_tasks(task_jsons, **scan_options)
    results = []
    for task, info in used.items():
        results.append(
            build_corpus(
                f"bigbench/{task}",
                Path(data_dir) / "bigbench" / task,
                lambda task=task, info=info: convert_scanned_task(
                    task_jsons[task], task, info["labels"]
                ),
                source={"sdist": archive.name, "bytes": archive.stat().st_size, "tasks": [task]},
                options={"labels": sorted(info["labels"])},
                force=force,
            )
        )
    summary = {"used": used, "skipped": skipped, "options": scan_options}
    out = Path(data_dir) / "bigbench" / FAMILIES_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, out)
    report = out.with_suffix(".md")
    report.write_text(families_markdown(summary), encoding="utf-8")
    return results, summary


def families_markdown(summary: dict[str, Any]) -> str:
    """The scan as Markdown: each used task with its labels, each skipped task with its reason."""
    lines = [
        "# BIG-bench fixed-label task families",
        "",
        f"Written by `build_families` (options {summary.get('options') or 'default'}): "
        f"{len(summary['used'])} tasks used, {len(summary['skipped'])} skipped.",
        "",
        "## Used",
        "",
        "| task | examples | labels (examples each) |",
        "|---|---|---|",
    ]
    for task, info in sorted(summary["used"].items()):
        labels = ", ".join(f"{k} ({v})" for k, v in info["labels"].items())
        lines.append(f"| `{task}` | {info['examples']} | {labels} |")
    lines += ["", "## Skipped", "", "| task | why |", "|---|---|"]
    lines += [f"| `{t}` | {why} |" for t, why in sorted(summary["skipped"].items())]
    return "\n".join(lines) + "\n"


def fixed_label_families(data_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The tasks `build_families` built: ``{task: {"labels": ..., "examples": n}}``."""
    path = Path(data_dir) / "bigbench" / FAMILIES_FILE
    if not path.is_file():
        raise CorpusError(
            f"{path} is missing: build the BIG-bench task families first with "
            f"`python data_scripts/build_bigbench.py --out {data_dir} --families`."
        )
    return json.loads(path.read_text(encoding="utf-8"))["used"]
