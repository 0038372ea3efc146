"""The `metanlp` command: help for every option, config errors that name the key and the allowed
values, and one real end-to-end pass (train -> evaluate -> adapt-predict -> push) at tiny size."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hub_server import FakeHub

from metanlp.cli import COMMANDS, _final_line, _parser, _train_overrides, main, parse_args


def test_entry_point_help():
    exe = Path(sys.executable).with_name("metanlp")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "metanlp.cli"]
    out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, check=True).stdout
    for name in COMMANDS:
        assert name in out


HEAVY = ("torch", "transformers", "datasets", "accelerate", "peft", "sklearn", "scipy")


def test_help_and_version_import_nothing_heavy():
    """``--help`` of every command and ``--version`` are fast because they import no ML library
    (checked on ``sys.modules`` in a fresh interpreter, not with a timer)."""
    code = (
        "import sys\n"
        "from metanlp.cli import COMMANDS, main\n"
        "for argv in [['--help'], ['--version'], *[[c, '--help'] for c in COMMANDS]]:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, argv\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.splitlines()[-1] == "[]"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    import metanlp

    assert capsys.readouterr().out.startswith(f"metanlp {metanlp.__version__} (torch ")


def test_help_shows_config_defaults_and_boolean_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--optimizer.lr VALUE, --learning-rate VALUE Peak outer learning rate" in shown
    assert "(default: 0.001)" in shown and "(default: cosine)" in shown
    assert "--keep-best, --no-keep-best" in shown and "(default: true)" in shown


def test_hugging_face_spellings_and_boolean_flags():
    from metanlp.training.config import MetaTrainerConfig

    args = parse_args(["train", "--config", "default", "--learning_rate", "0.01", "--max_steps",
                       "3", "--no-keep-best", "--lr-scheduler-type", "linear", "--progress-bar"])  # fmt: skip
    overrides = _train_overrides(args)
    assert overrides == {"optimizer.lr": 0.01, "max_steps": 3, "keep_best": False,
                         "optimizer.schedule": "linear", "progress_bar": True}  # fmt: skip
    config = MetaTrainerConfig.from_yaml("default", **overrides)
    assert (config.optimizer.lr, config.max_steps, config.keep_best) == (0.01, 3, False)
    assert parse_args(["train", "--config", "default", "--learning-rate", "0.01"]) == parse_args(
        ["train", "--config", "default", "--optimizer.lr", "0.01"]
    )


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["train", "--config", "default", "--lr", "0.1"], "did you mean --optimizer.lr?"),
        (["train", "--config", "default", "--max_step", "3"], "did you mean --max-steps?"),
        (["train", "--config", "default", "--keep-best", "false"], "--no-key (off)"),
        (["evaluate", "--episodes", "e", "--dataset", "d", "--n-episode", "3"],
         "did you mean --n-episodes?"),
        (["evalute"], "did you mean 'evaluate'?"),
        (["make-episodes", "--dataset", "d", "--out", "o", "--mode", "strictt"],
         "did you mean 'strict'?"),
    ],
    ids=["dotted-tail", "underscore-typo", "boolean-value", "evaluate-flag", "command", "choice"],
)  # fmt: skip
def test_unknown_options_get_the_closest_real_one(argv, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: metanlp") and expected in err, err


def test_evaluate_names_the_n_episodes_flag(tmp_path, capsys):
    argv = ["evaluate", "--episodes", str(tmp_path / "e.json"), "--dataset", "bbc_news"]
    assert main([*argv, "--n-episodes", "0"]) == 2
    assert "--n-episodes 0: evaluate at least 1 episode" in capsys.readouterr().err


def test_final_line_in_the_tables_units():
    line = _final_line("accuracy", 1 / 3, 2, "runs/x/learner")
    assert line == "best accuracy: 33.3 % (step 2); learner saved to runs/x/learner"
    assert _final_line("loss", 0.123456, 4, "d").startswith("best loss: 0.1235 (step 4)")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_is_explained(command, capsys):
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    assert parser.description
    for action in parser._actions:
        assert action.help and len(action.help) > 8, (
            f"{command} {action.option_strings} has no help"
        )
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert all(o in shown for a in parser._actions for o in a.option_strings)


@pytest.mark.parametrize(
    "config,expected",
    [
        ({"adapt": "lorra"}, ["adapt='lorra'", "did you mean 'lora'?", "top", "head", "all"]),
        ({"optimizer": {"schedul": "cosine"}}, ["did you mean 'schedule'?", "allowed keys"]),
        ({"mixed_precision": "fp8"}, ["mixed_precision", "bf16", "fp16"]),
        ({"max_step": 3}, ["'max_step': did you mean 'max_steps'?"]),
        ({"learning_rate": 0.1}, ["'learning_rate' is 'optimizer.lr' here"]),
    ],
    ids=["bad-value", "unknown-nested-key", "bad-precision", "typo-key", "hf-key"],
)
def test_bad_config_names_key_and_allowed_values(tmp_path, capsys, config, expected):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metanlp train: error:")
    for text in expected:
        assert text in err


TRAIN_CONFIG = {
    "model": "default",
    "adapt": "lora",
    "adapt_options": {"lora_r": 2},
    "max_ways": 4,
    "algorithm": "maml",
    "algorithm_config": {"inner_steps": 1, "inner_lr": 0.1, "first_order": True},
    "data": {
        "train": [
            {
                "dataset": "bbc_news",
                "classes": ["business", "politics", "sports"],
                "n_way": 2,
                "k_shot": 1,
                "q_query": 1,
            }
        ],  # fmt: skip
        "max_length": 16,
    },
    "meta_batch_size": 1,
    "max_steps": 1,
    "eval_every": 1,
    "report_to": [],
    "progress_bar": False,
}


def test_end_to_end(data_dir, tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {**TRAIN_CONFIG, "data": {**TRAIN_CONFIG["data"], "data_dir": str(data_dir)}}
        )
    )
    assert main(["train", "--config", str(cfg), "--output-dir", str(tmp_path / "run")]) == 0
    learner = tmp_path / "run" / "learner"
    assert capsys.readouterr().out.endswith(
        f"no meta-validation (data.val is not set); learner saved to {learner}\n"
    )
    assert (learner / "adapter" / "adapter_model.safetensors").is_file()
    card = (learner / "README.md").read_text()
    assert "maml" in card and "bbc_news" in card
    assert "## Meta-training" in card and "- max_steps: `1`" in card  # the run's settings
    assert "- learning_rate: `0.001`" in card and "- lr_scheduler_type: `cosine`" in card

    episodes = tmp_path / "test.json"
    assert main(["make-episodes", "--dataset", "bbc_news", "--data-dir", str(data_dir),
                 "--out", str(episodes), "--n", "2", "--n-way", "2", "--k-shot", "1",
                 "--q-query", "1", "--classes", "entertainment", "tech", "--max-length", "16"]) == 0  # fmt: skip
    assert main(["evaluate", "--episodes", str(episodes), "--dataset", "bbc_news",
                 "--data-dir", str(data_dir), "--model", f"maml={learner}", "--baselines",
                 "prototypes", "--output-dir", str(tmp_path / "eval")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "on 2 of the 2 episodes" in out and "| maml | 2 |" in out and "| prototypes | 2 |" in out
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [len(r["episodes"]) for r in results] == [2, 2]

    support = tmp_path / "support.jsonl"
    support.write_text("\n".join(json.dumps(r) for r in [
        {"text": "The film won three awards", "label": "film"},
        {"text": "The actress starred in a new movie", "label": "film"},
        {"text": "The bank reported higher profits", "label": "money"},
        {"text": "Shares rose on the stock market", "label": "money"},
    ]))  # fmt: skip
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("The director's movie opens on Friday\nProfits at the bank fell\n")
    preds = tmp_path / "preds.jsonl"
    assert main(["adapt-predict", "--model", str(learner), "--support", str(support),
                 "--inputs", str(inputs), "--output", str(preds), "--steps", "2"]) == 0  # fmt: skip
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["text"] for r in rows] == [
        "The director's movie opens on Friday",
        "Profits at the bank fell",
    ]
    assert all(
        r["label"] in ("film", "money") and set(r["scores"]) == {"film", "money"} for r in rows
    )
    tuned = tmp_path / "tuned.jsonl"
    assert main(["adapt-predict", "--model", str(learner), "--support", str(support),
                 "--inputs", str(inputs), "--output", str(tuned), "--steps", "2",
                 "--finetune-after", "2"]) == 0  # fmt: skip
    tuned_rows = [json.loads(line) for line in tuned.read_text().splitlines()]
    assert [r["text"] for r in tuned_rows] == [r["text"] for r in rows]
    assert [r["scores"] for r in tuned_rows] != [r["scores"] for r in rows]  # it fine-tuned
    assert main(["adapt-predict", "--model", str(learner), "--support", str(support),
                 "--inputs", str(inputs), "--finetune-after", "-1"]) != 0  # fmt: skip
    assert "--finetune-after -1" in capsys.readouterr().err

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with FakeHub() as hub:
        assert main(["push", "--model", str(learner), "--repo-id", "bob/tiny", "--private",
                     "--token", "t", "--endpoint", hub.url]) == 0  # fmt: skip
    assert hub.repos["bob/tiny"]["private"] is True
    card = hub.repos["bob/tiny"]["files"]["README.md"].decode()
    local_card = (learner / "README.md").read_text()
    assert card == local_card.replace("<this repo id or folder>", "bob/tiny") != local_card


# -- failures: one line naming the file and the fix, never a traceback ------------------------------
def _one_line_error(capsys, command: str) -> str:
    """The error line, which must be the last thing on stderr (progress bars of model loading
    may come before it), with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.rstrip("\n").split("\n")[-1]
    assert last.startswith(f"metanlp {command}: error: ") and err.endswith(last + "\n"), err
    return last


EPISODES_HEADER = '{"format": "metanlp-episodes", "version": 1, "datasets": {}, "metadata": {}, '


@pytest.mark.parametrize(
    "file_name,content,argv,expected",
    [
        ("cfg.yaml", "algorithm: maml\ndata: {train: [1, 2\n", ["train", "--config", "{file}"],
         ["cfg.yaml is not valid YAML at line 3"]),
        ("e.json", "", ["evaluate", "--episodes", "{file}", "--dataset", "bbc_news"],
         ["e.json is empty", "make-episodes"]),
        ("e.json", EPISODES_HEADER + '"episodes": []}',
         ["evaluate", "--episodes", "{file}", "--dataset", "bbc_news"],
         ["e.json holds no episodes", "make-episodes"]),
        ("e.json", EPISODES_HEADER + '"episodes": [7]}',
         ["evaluate", "--episodes", "{file}", "--dataset", "bbc_news"],
         ["e.json: episode 0 is malformed"]),
        ("x", "", ["make-episodes", "--dataset", "../../..", "--out", "{file}.json"],
         ["'../../..'", "inside the data folder"]),
    ],
    ids=["yaml-syntax", "empty-episodes", "no-episodes", "malformed-episode", "dataset-escape"],
)  # fmt: skip
def test_bad_files_exit_with_one_line(tmp_path, capsys, file_name, content, argv, expected):
    path = tmp_path / file_name
    path.write_text(content)
    command = argv[0]
    assert main([a.replace("{file}", str(path)) for a in argv]) == 2
    err = _one_line_error(capsys, command)
    for text in expected:
        assert text in err


def test_make_episodes_refuses_zero_episodes(data_dir, tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["make-episodes", "--dataset", "bbc_news", "--data-dir", str(data_dir),
                 "--out", str(out), "--n", "0"]) == 2  # fmt: skip
    assert "at least 1" in _one_line_error(capsys, "make-episodes")
    assert not out.exists()


def test_push_offline_exits_with_one_line_unless_traceback_is_asked(tmp_path, capsys, monkeypatch):
    from metanlp.api import MetaLearner

    learner = MetaLearner.from_pretrained(device="cpu").save_pretrained(tmp_path / "learner")
    argv = ["push", "--model", str(learner), "--repo-id", "bob/x"]
    assert main(argv) == 1  # not an input error: exit 1, with the error's type
    err = _one_line_error(capsys, "push")
    assert "RuntimeError: Pushing needs the network but HF_HUB_OFFLINE is set" in err
    assert "METANLP_TRACEBACK=1" in err
    monkeypatch.setenv("METANLP_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        main(argv)


def test_damaged_learner_and_episode_file_are_named(data_dir, tmp_path, capsys):
    from metanlp.api import MetaLearner

    learner = MetaLearner.from_pretrained(device="cpu").save_pretrained(tmp_path / "learner")
    (learner / "head.safetensors").write_bytes(b"")
    support = tmp_path / "support.jsonl"
    support.write_text('{"text": "a b", "label": "x"}\n{"text": "c d", "label": "y"}\n')
    assert main(["adapt-predict", "--model", str(learner), "--support", str(support),
                 "--inputs", str(support)]) == 2  # fmt: skip
    assert f"{learner / 'head.safetensors'} is empty" in _one_line_error(capsys, "adapt-predict")

    episodes = tmp_path / "e.json"
    assert main(["make-episodes", "--dataset", "bbc_news", "--data-dir", str(data_dir),
                 "--out", str(episodes), "--n", "2", "--n-way", "2", "--k-shot", "1",
                 "--q-query", "1", "--max-length", "16"]) == 0  # fmt: skip
    data = json.loads(episodes.read_text())
    data["episodes"][0]["label_names"][0] = "anatomy"
    episodes.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["evaluate", "--episodes", str(episodes), "--dataset", "bbc_news",
                 "--data-dir", str(data_dir), "--baselines", "prototypes",
                 "--output-dir", str(tmp_path / "eval")]) == 2  # fmt: skip
    err = _one_line_error(capsys, "evaluate")
    assert f"{episodes}: episode 0" in err and "'anatomy'" in err and "'business'" in err
