"""The reliability sweep's bad-input table: each kind of mistake a user makes, through the Python
API and through the CLI, must end in a clear error that names the problem and the fix, or in a
correct result. One row per kind; the closing note counts them (``len(API_CASES) +
len(CLI_CASES)``). Damaged learner folders and checkpoint faults are in test_reliability.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from text_examples import IOB2_TAGS, LABELS, QUERY, TEXTS, WORDS

from metanlp.api import MetaLearner
from metanlp.cli import main

TYPES = ["person", "loc", "org"]


@pytest.fixture(scope="module")
def learner(single_thread):
    torch.manual_seed(0)
    return MetaLearner.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def adapted(learner):
    return learner.adapt(TEXTS, LABELS, steps=1)


@pytest.fixture(scope="module")
def tagger(single_thread):
    torch.manual_seed(0)
    ner = MetaLearner.from_pretrained(task="token", device="cpu")
    return ner.adapt(WORDS, IOB2_TAGS, entity_types=TYPES, steps=1)


@pytest.fixture(scope="module")
def saved_folder(learner, tmp_path_factory):
    return learner.save_pretrained(tmp_path_factory.mktemp("saved") / "learner")


def _raises(error, *texts):
    """Expect ``error`` whose message holds every one of ``texts``."""
    return ("raises", error, texts)


def _returns(check):
    """Expect a result for which ``check(result)`` holds."""
    return ("returns", check)


def _truncated_head(folder: Path, tmp: Path) -> Path:
    import shutil

    copy = tmp / "learner"
    shutil.copytree(folder, copy)
    head = copy / "head.safetensors"
    head.write_bytes(head.read_bytes()[:40])
    return copy


def _not_a_learner(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("my notes")
    return tmp


API_CASES = {
    # -- the support set -----------------------------------------------------------------------
    "no-texts": (lambda f: f.learner.adapt([], []), _raises(ValueError, "empty", "at least one")),
    "none-text": (
        lambda f: f.learner.adapt([None, *TEXTS[1:]], LABELS),
        _raises(ValueError, "positions [0]", "visible characters"),
    ),
    "blank-text": (
        lambda f: f.learner.adapt(["  \t", *TEXTS[1:]], LABELS),
        _raises(ValueError, "whitespace", "positions [0]"),
    ),
    "control-chars-only": (
        lambda f: f.learner.adapt(["\x00\x07", *TEXTS[1:]], LABELS),
        _raises(ValueError, "control-character-only"),
    ),
    "string-not-list": (
        lambda f: f.learner.adapt("one text", ["a"]),
        _raises(TypeError, "list of strings", "str"),
    ),
    "generator": (
        lambda f: f.learner.adapt((t for t in TEXTS), LABELS),
        _raises(TypeError, "list of strings", "generator"),
    ),
    "mismatched-lengths": (
        lambda f: f.learner.adapt(TEXTS, LABELS[:-1]),
        _raises(ValueError, "6 texts but 5 labels", "one label per text"),
    ),
    "one-class": (
        lambda f: f.learner.adapt(TEXTS[:2], ["a", "a"]),
        _raises(ValueError, "at least 2 classes"),
    ),
    "missing-label": (
        lambda f: f.learner.adapt(TEXTS, [None, *LABELS[1:]]),
        _raises(TypeError, "positions [0]", "missing"),
    ),
    "mixed-equal-label-types": (
        lambda f: f.learner.adapt(TEXTS[:4], [1, 1, True, True]),
        _raises(ValueError, "1 (int) and True (bool)", "same type"),
    ),
    "mixed-distinct-label-types": (
        lambda f: f.learner.adapt(TEXTS[:4], [1, 1, "1", "1"], steps=1).classes_,
        _returns(lambda classes: classes == [1, "1"]),
    ),
    "numpy-labels": (
        lambda f: f.learner.adapt(TEXTS, __import__("numpy").array(LABELS)),
        _raises(TypeError, "labels must be a list", "ndarray"),
    ),
    "negative-steps": (
        lambda f: f.learner.adapt(TEXTS, LABELS, steps=-1),
        _raises(ValueError, "steps=-1", ">= 0"),
    ),
    "ner-sentences-to-a-text-learner": (
        lambda f: f.learner.adapt(WORDS, IOB2_TAGS),
        _raises(TypeError, "NER sentences", "task='token'"),
    ),
    # -- prediction and scoring ----------------------------------------------------------------
    "predict-empty-list": (lambda f: f.adapted.predict([]), _returns(lambda out: out == [])),
    "predict-proba-empty-list": (
        lambda f: f.adapted.predict_proba([]),
        _returns(lambda p: p.shape == (0, 3)),
    ),
    "predict-10k-words": (
        lambda f: f.adapted.predict(["the bank raised rates " * 2500]),
        _returns(lambda out: len(out) == 1 and out[0] in LABELS),
    ),
    "emoji-rtl-text": (
        lambda f: f.adapted.predict(["\u202eevil\u202c 😀🎉", "مرحبا بالعالم", "שלום"]),
        _returns(lambda out: len(out) == 3 and set(out) <= set(LABELS)),
    ),
    "predict-non-string": (
        lambda f: f.adapted.predict([3]),
        _raises(ValueError, "non-string", "positions [0]"),
    ),
    "unknown-label-at-evaluation": (
        lambda f: f.adapted.score(QUERY, ["business", "weather"]),
        _raises(ValueError, "'weather'", "not classes of this task", "adapt again"),
    ),
    "score-known-labels": (
        lambda f: f.adapted.score(QUERY, ["business", "sport"]),
        _returns(lambda acc: 0.0 <= acc <= 1.0),
    ),
    # -- NER -----------------------------------------------------------------------------------
    "ner-tags-wrong-length": (
        lambda f: f.ner_learner.adapt(WORDS, [["O", "O"], *IOB2_TAGS[1:]], entity_types=TYPES),
        _raises(ValueError, "5 words but 2"),
    ),
    "ner-empty-word": (
        lambda f: f.ner_learner.adapt([["", *WORDS[0][1:]], *WORDS[1:]], IOB2_TAGS),
        _raises(ValueError, "Sentence 0", "visible characters"),
    ),
    "ner-unknown-type": (
        lambda f: f.ner_learner.adapt(
            WORDS, [["B-persn", *IOB2_TAGS[0][1:]], *IOB2_TAGS[1:]], entity_types=TYPES
        ),  # fmt: skip
        _raises(ValueError, "Unknown tag type(s) ['persn']"),
    ),
    "ner-predict-empty-sentence": (
        lambda f: f.tagger.predict([[], ["Ann", "lives", "in", "Paris"]]),
        _returns(lambda tags: tags[0] == [] and len(tags[1]) == 4),
    ),
    "ner-predict-string-sentence": (
        lambda f: f.tagger.predict(["Ann lives in Paris"]),
        _raises(ValueError, "Sentence 0", "list of words"),
    ),
    # -- loading -------------------------------------------------------------------------------
    "missing-path": (
        lambda f: MetaLearner.from_pretrained(f.tmp / "nowhere" / "learner"),
        _raises(FileNotFoundError, "nowhere", "does not exist", "save_pretrained()"),
    ),
    "folder-not-a-learner": (
        lambda f: MetaLearner.from_pretrained(_not_a_learner(f.tmp)),
        _raises(FileNotFoundError, "neither a saved learner", "save_pretrained"),
    ),
    "truncated-safetensors": (
        lambda f: MetaLearner.from_pretrained(_truncated_head(f.saved_folder, f.tmp)),
        _raises(ValueError, "head.safetensors", "truncated or corrupt"),
    ),
    "unknown-setting": (
        lambda f: MetaLearner.from_pretrained(None, lr=3e-3),
        _raises(TypeError, "['lr']", "algorithm_config"),
    ),
    "unknown-algorithm": (
        lambda f: MetaLearner.from_pretrained(None, algorithm="mamal"),
        _raises(ValueError, "'mamal'", "maml", "protonet"),
    ),
    "zero-inner-steps": (
        lambda f: MetaLearner.from_pretrained(
            None, algorithm="maml", adapt="head", algorithm_config={"inner_steps": 0}
        ),  # fmt: skip
        _raises(ValueError, "inner_steps=0", ">= 1"),
    ),
    "negative-inner-lr": (
        lambda f: MetaLearner.from_pretrained(None, algorithm_config={"inner_lr": -1.0}),
        _raises(ValueError, "inner_lr=-1.0", "> 0"),
    ),
    "bad-device": (
        lambda f: MetaLearner.from_pretrained(None, device="tpu"),
        _raises(ValueError, "'tpu'", "'cpu', 'cuda'"),
    ),
}


class _Fixtures:
    def __init__(self, request, tmp: Path) -> None:
        self.request, self.tmp = request, tmp

    def __getattr__(self, name: str):
        if name == "ner_learner":
            return self.request.getfixturevalue("tagger").learner
        return self.request.getfixturevalue(name)


@pytest.mark.parametrize("case", list(API_CASES))
def test_bad_api_input(case, request, tmp_path):
    run, expected = API_CASES[case]
    fixtures = _Fixtures(request, tmp_path)
    if expected[0] == "raises":
        _, error, texts = expected
        with pytest.raises(error) as info:
            run(fixtures)
        for text in texts:
            assert text in str(info.value), (case, str(info.value))
    else:
        assert expected[1](run(fixtures)), case


# -- the CLI: one line on stderr, exit status 2, the message names the fix -----------------------
def _config(**keys) -> str:
    import yaml

    base = {"data": {"train": [{"dataset": "bbc_news", "n_way": 2, "k_shot": 1, "q_query": 1}]}}
    return yaml.safe_dump({**base, **keys})


def _train(**keys) -> tuple[dict[str, str], list[str]]:
    """A ``train`` run on a config file with these keys over a small valid base."""
    return {"cfg.yaml": _config(**keys)}, ["train", "--config", "{cfg.yaml}"]


def _episodes(dataset: str, *options: str) -> list[str]:
    return ["make-episodes", "--dataset", dataset, "--out", "{dir}/e.json", "--n", "2", *options]


CLI_CASES = {
    "config-unknown-key": (*_train(max_step=3), ["max_step", "allowed keys", "max_steps"]),
    "config-wrong-type": (*_train(max_steps="ten"), ["max_steps='ten'", "integer >= 1"]),
    "config-negative-lr": (*_train(optimizer={"lr": -0.001}), ["optimizer.lr=-0.001", "> 0"]),
    "config-zero-inner-steps": (
        *_train(algorithm="maml", algorithm_config={"inner_steps": 0}),
        ["inner_steps=0", ">= 1"],
    ),
    "config-unknown-algorithm": (
        *_train(algorithm="mamal"),
        ["'mamal'", "choose one of", "maml"],
    ),
    "override-not-yaml": (
        {},
        ["train", "--config", "default", "--algorithm-config", "{inner_steps: [1"],
        ["--algorithm-config", "not a YAML value"],
    ),
    "n-larger-than-classes": (
        {},
        _episodes("bbc_news", "--n-way", "9"),
        ["n_way=9", "only 5", "Lower n_way"],
    ),
    "k-larger-than-examples": (
        {},
        _episodes("bbc_news", "--n-way", "2", "--k-shot", "100000"),
        ["K+Q", "lower K or Q"],
    ),
    "ner-k-larger-than-mentions": (
        {},
        _episodes("wnut16", "--n-way", "2", "--k-shot", "100000"),
        ["mentions", "Lower K/Q"],
    ),
    "unknown-class": (
        {},
        _episodes("bbc_news", "--n-way", "2", "--classes", "business", "weather"),
        ["Unknown classes ['weather']", "business"],
    ),
    "support-without-labels": (
        {"s.jsonl": '{"text": "good", "label": "a"}\n{"text": "bad"}\n', "q.txt": "hello\n"},
        ["adapt-predict", "--model", "default", "--support", "{s.jsonl}", "--inputs", "{q.txt}"],
        ["lines [2]", "'label'"],
    ),
    "missing-support-file": (
        {"q.txt": "hello\n"},
        [
            "adapt-predict",
            "--model",
            "default",
            "--support",
            "{dir}/none.jsonl",
            "--inputs",
            "{q.txt}",
        ],  # fmt: skip
        ["No such file", "none.jsonl"],
    ),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_cli_input(case, data_dir, tmp_path, capsys):
    files, argv, expected = CLI_CASES[case]
    for name, content in files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    names = {name: str(tmp_path / name) for name in files} | {"dir": str(tmp_path)}
    for name, path in names.items():
        argv = [a.replace("{" + name + "}", path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"metanlp {argv[0]}: error:"), err
    for text in expected:
        assert text in err, (case, err)


def test_the_sweep_covers_at_least_25_kinds():
    assert len(API_CASES) + len(CLI_CASES) >= 25


def test_cli_predicts_nothing_for_an_empty_inputs_file(data_dir, tmp_path, capsys):
    support = tmp_path / "s.jsonl"
    support.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                               for t, y in zip(TEXTS, LABELS, strict=True)))  # fmt: skip
    (tmp_path / "empty.txt").write_text("")
    argv = ["adapt-predict", "--model", "default", "--support", str(support), "--inputs",
            str(tmp_path / "empty.txt"), "--steps", "1"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == ""


def test_truncated_learner_never_loads_partially(saved_folder, tmp_path):
    """A truncated tensor file is refused; the intact original still loads afterwards."""
    with pytest.raises(ValueError, match="truncated or corrupt"):
        MetaLearner.from_pretrained(_truncated_head(saved_folder, tmp_path))
    head = load_file(str(saved_folder / "head.safetensors"))
    again = MetaLearner.from_pretrained(saved_folder, device="cpu")
    assert torch.equal(again.model.head.weight.detach(), head["head.weight"])
