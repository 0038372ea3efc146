"""The general learner's task distribution: held-out corpora never read, missing sources left
out, and the held-out evaluation settings (real corpora, the packaged MiniLM)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from metanlp.corpora import DEFAULT_CORPORA, PINNED_CORPORA, load_corpus
from metanlp.episodes import EpisodeCollator
from metanlp.general import (
    HELD_OUT,
    HELD_OUT_SETTINGS,
    HELD_OUT_TWEET_DOMAINS,
    GeneralTasks,
    general_task_sampler,
    held_out_sampler,
)


def _mirror(
    src: Path, dst: Path, poison: set[str] = frozenset(), leave_out: set[str] = frozenset()
):
    """A data folder linking to the built corpora; ``poison`` ones hold an unreadable dataset
    (loading it raises), ``leave_out`` ones are absent."""
    dst.mkdir()
    for name in (*DEFAULT_CORPORA, *PINNED_CORPORA):
        if name in leave_out:
            continue
        if name in poison:
            (dst / name).mkdir()
            (dst / name / "state.json").write_text("{ not a dataset")
        else:
            os.symlink(src / name, dst / name)
    return dst


@pytest.fixture(scope="module")
def collator(minilm):
    return EpisodeCollator(minilm.tokenizer, 32)


def test_held_out_corpora_are_never_read_neither_texts_nor_labels(
    pinned_data_dir, tmp_path, collator
):
    held = {c for c in HELD_OUT if not c.startswith("bigbench/")}
    assert {"bbc_news", "banking77", "stackoverflow"} <= held
    assert {s.corpus for s in HELD_OUT_SETTINGS} <= held | {"tweets"}
    assert all(s.group == f"domain={HELD_OUT_TWEET_DOMAINS[0]}" for s in HELD_OUT_SETTINGS
               if s.corpus == "tweets")  # fmt: skip
    # the held-out folders are poisoned: a single read of one would raise
    data = _mirror(pinned_data_dir, tmp_path / "d", poison=held)
    sampler, info = general_task_sampler(data, collator, GeneralTasks(bigbench=False), seed=3)
    assert not set(info["meta_trained_on"]) & held and "missing" not in info
    assert set(GeneralTasks().corpora) <= set(info["meta_trained_on"])
    held_texts = {t for c in held for t in load_corpus(c, pinned_data_dir)["text"]}
    tweets = load_corpus("tweets", pinned_data_dir)
    held_texts |= {t for t, d in zip(tweets["text"], tweets["domain"], strict=True)
                   if d in HELD_OUT_TWEET_DOMAINS}  # fmt: skip
    held_labels = {n for c in held for n in load_corpus(c, pinned_data_dir).features["label"].names}
    shared = {"exchange_rate"}  # a CLINC150 intent has a BANKING77 intent's name (own texts)
    seen, checked = set(), 0
    for i in range(60):
        spec = sampler.spec(i)
        source = sampler.sources[spec.dataset] if spec.dataset in sampler.sources else None
        seen.add(spec.dataset)
        if spec.dataset.startswith("smlmt:") or source is None:
            continue
        texts = {source.texts[r] for r in spec.support_rows + spec.query_rows}
        assert not texts & held_texts, spec.task
        assert not (set(spec.label_names) & held_labels) - shared, spec.task
        checked += 1
    assert len(seen) > 3 and checked >= 15, (seen, checked)


def test_missing_source_is_left_out_and_listed(pinned_data_dir, tmp_path, collator):
    data = _mirror(pinned_data_dir, tmp_path / "d", leave_out={"mcid", "dbpedia"})
    _, info = general_task_sampler(data, collator, GeneralTasks(bigbench=False))
    assert sorted(info["missing"]) == ["dbpedia", "mcid"]
    assert "build_corpora.py" in info["missing"]["mcid"]
    assert "clinc150" in info["meta_trained_on"] and "mcid" not in info["meta_trained_on"]
    with pytest.raises(ValueError, match="held-out corpora"):
        GeneralTasks(corpora=["clinc150", "banking77"])


def test_banking77_setting_is_all_intents_train_support_whole_test_split(pinned_data_dir):
    setting = HELD_OUT_SETTINGS[0]
    assert (setting.corpus, setting.n_way, setting.shots, setting.query) == (
        "banking77",
        None,
        5,
        None,
    )
    assert setting.episodes >= 3 and HELD_OUT_SETTINGS[1].shots == 10
    data = load_corpus("banking77", pinned_data_dir)
    sampler = held_out_sampler(setting, pinned_data_dir)
    specs = sampler.specs(setting.episodes)
    test_rows = {i for i, s in enumerate(data["split"]) if s == "test"}
    for spec in specs:
        assert len(spec.label_names) == 77 and len(spec.support_rows) == 77 * 5
        assert set(spec.query_rows) == test_rows  # the whole test split
        assert all(data[r]["split"] == "train" for r in spec.support_rows[:20])
    assert specs[0].support_rows != specs[1].support_rows  # fresh draws
    for s in HELD_OUT_SETTINGS[2:]:  # the episodic ones build from the real corpora
        assert len(held_out_sampler(s, pinned_data_dir).specs(2)) == 2


def test_frozen_logistic_regression_on_the_many_class_setting_smoke(pinned_data_dir, minilm):
    from metanlp.baselines import FrozenLogisticRegression
    from metanlp.evaluation import evaluate
    from metanlp.models import FewShotModel

    smoke = dataclasses.replace(HELD_OUT_SETTINGS[0], shots=2, query=2, episodes=1)
    sampler = held_out_sampler(smoke, pinned_data_dir, tokenizer=minilm.tokenizer, max_length=32)
    episodes = [sampler.build(s) for s in sampler.specs(smoke.episodes)]
    assert episodes[0].n_way == 77 and len(episodes[0].query_targets) == 154
    model = FewShotModel(minilm.model, pooling="mean")
    (result,) = evaluate({"frozen LR": FrozenLogisticRegression(model)}, episodes, progress=False)
    # chance is 1/77; frozen MiniLM + logistic regression at 2 shots is far above it
    assert result["summary"]["accuracy"]["mean"] > 0.25


def test_episode_files_record_the_corpus_fingerprint(pinned_data_dir, tmp_path):
    import json

    from metanlp.corpora import read_stamp
    from metanlp.episodes import save_episodes

    sampler = held_out_sampler(HELD_OUT_SETTINGS[2], pinned_data_dir)
    path = save_episodes(tmp_path / "so.json", sampler.specs(2), sampler)
    header = json.loads(path.read_text())["datasets"]["stackoverflow"]
    assert (
        header["corpus_fingerprint"] == read_stamp(pinned_data_dir / "stackoverflow")["fingerprint"]
    )


def test_train_test_sampler_errors_name_the_problem(pinned_data_dir):
    from metanlp.general import TrainTestSampler

    data = load_corpus("mcid", pinned_data_dir)
    with pytest.raises(
        ValueError, match=r"'mcid' has no split 'dev'; it has \['test', 'train', 'validation'\]"
    ):
        TrainTestSampler(data, support_split="dev", name="mcid")
    with pytest.raises(ValueError, match=r"fewer than 90 train rows .* lower the shots"):
        TrainTestSampler(data, k_shot=90, name="mcid")
    with pytest.raises(ValueError, match="n_way=20; 'mcid' has 16 classes"):
        TrainTestSampler(data, n_way=20, name="mcid")
    spec = TrainTestSampler(data, n_way=4, k_shot=3, q_query=2, name="mcid").spec(0)
    assert (len(spec.support_rows), len(spec.query_rows)) == (12, 8)
    assert {data[r]["split"] for r in spec.query_rows} == {"test"}
