"""The ``metanlp`` command: thin subcommands over the Python API (no logic of their own).

    metanlp train --config cfg.yaml                      meta-train, then save a learner folder
    metanlp make-episodes --dataset bbc_news --out e.json  draw a fixed test episode set
    metanlp evaluate --episodes e.json --model maml=runs/x/learner --baselines finetune prototypes
    metanlp adapt-predict --model DIR --support s.jsonl --inputs q.jsonl
    metanlp push --model DIR --repo-id user/name

Run ``metanlp <command> --help`` for every option. Options take Hugging Face spellings too
(``--learning_rate`` = ``--learning-rate`` = ``--optimizer.lr``); an unknown one gets the closest
real one suggested. This module imports nothing heavy: ``--help`` never loads torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from metanlp import __version__

BASELINES = ("finetune", "prototypes")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default when it has a meaningful one (not None, not empty)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        shown = not (
            default is None or default is False or default == [] or default == argparse.SUPPRESS
        )
        if shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


FINETUNE_AFTER_HELP = (
    "test-time fine-tuning: AdamW steps on every weight after the learner's adaptation "
    "(0: off; default: the learner's config)"
)


class _Parser(argparse.ArgumentParser):
    """No abbreviated options (``--lr`` must not silently mean ``--lr-scheduler-type``: an unknown
    option gets the closest real one suggested instead); the closest allowed value is added to
    "invalid choice" errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        from metanlp.spec import closest

        if "invalid choice: " in message:
            bad, _, allowed = message.partition("invalid choice: ")[2].partition(" (choose from")
            near = closest(bad.strip("'"), re.findall(r"'([^']*)'", allowed))
            if near is not None:
                message += f"; did you mean {near!r}?"
        super().error(message)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    libs = []
    for lib in ("torch", "transformers", "peft"):
        try:
            libs.append(f"{lib} {version(lib)}")
        except PackageNotFoundError:
            libs.append(f"{lib} not installed")
    return f"metanlp {__version__} ({', '.join(libs)})"


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="metanlp",
        description="Few-shot text classification and NER by meta-learning on Transformers.",
        formatter_class=_Formatter,
    )
    p.add_argument("--version", action="version", version=_version(),
                   help="show metanlp's version (and torch's, transformers', peft's) and exit")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    fmt = _Formatter

    t = sub.add_parser("train", help="meta-train from a YAML config", formatter_class=fmt,
                       description="Meta-train with MetaTrainer, then save a learner folder "
                       "(<output_dir>/learner) that `evaluate`, `adapt-predict` and `push` take.")  # fmt: skip
    t.add_argument("--config", required=True,
                   help="YAML file mirroring MetaTrainerConfig (or a packaged config name)")  # fmt: skip
    t.add_argument("--resume", action="store_true", help="resume from the newest checkpoint")
    _add_config_overrides(t)

    m = sub.add_parser("make-episodes", help="draw a fixed set of test episodes to a JSON file",
                       formatter_class=fmt, description="Write episode definitions (rows, label "
                       "order, dataset fingerprint) so every method is scored on identical episodes.")  # fmt: skip
    m.add_argument("--dataset", required=True, help="built corpus name (see metanlp.corpora)")
    m.add_argument(
        "--data-dir", help="folder of built corpora (default $METANLP_DATA_DIR or ./data)"
    )
    m.add_argument("--out", required=True, help="episode file to write (.json)")
    m.add_argument("--n", type=int, default=600, help="number of episodes")
    m.add_argument("--n-way", type=int, default=5, help="classes (or entity types) per episode")
    m.add_argument("--k-shot", type=int, default=5, help="support examples (mentions) per class")
    m.add_argument("--q-query", type=int, default=5, help="query examples (mentions) per class")
    m.add_argument(
        "--classes", nargs="+", help="allowed classes / entity types (a meta-test split)"
    )
    m.add_argument("--group-by", help="classification: column defining task families (e.g. domain)")
    m.add_argument("--groups", nargs="+", help="allowed values of --group-by (held-out domains)")
    m.add_argument(
        "--mode", default="relaxed", choices=("strict", "relaxed"), help="NER sampling mode"
    )
    m.add_argument("--max-length", type=int, default=128, help="tokenizer truncation on load")
    m.add_argument("--seed", type=int, default=0, help="episode stream seed")

    e = sub.add_parser("evaluate", help="score learners and baselines on identical episodes",
                       formatter_class=fmt, description="Mean ± 95% CI of accuracy / macro-F1 "
                       "(classification) or entity F1 (NER) over fixed episodes; writes results.json "
                       "(every per-episode value) and comparison.md.")  # fmt: skip
    e.add_argument("--episodes", required=True, help="episode file from `make-episodes`")
    e.add_argument("--dataset", required=True, help="built corpus the episodes were drawn from")
    e.add_argument("--data-dir", help="folder of built corpora")
    e.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a learner to score (saved folder or Hub id); repeat for several")  # fmt: skip
    e.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                   help="baselines from --base-model: finetune (no meta-training) and prototypes "
                   "(nearest centroid on frozen embeddings)")  # fmt: skip
    e.add_argument("--base-model", default=None, help="encoder of the baselines (default MiniLM)")
    e.add_argument("--steps", type=int, help="inner steps for the learners (default: their config)")
    e.add_argument("--finetune-steps", type=int, default=10, help="optimiser steps of finetune")
    e.add_argument("--finetune-after", type=int, metavar="STEPS", help=FINETUNE_AFTER_HELP)
    e.add_argument("--n-episodes", type=int,
                   help="episodes to use (default 600 on GPU, fewer on CPU; printed)")  # fmt: skip
    e.add_argument("--output-dir", default="eval", help="where results.json and comparison.md go")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")

    a = sub.add_parser("adapt-predict", help="adapt a learner to labelled examples and predict",
                       formatter_class=fmt, description="Support file: JSON lines with "
                       '{"text", "label"} (classification) or {"tokens", "tags"} (NER). Inputs: JSON '
                       'lines with "text" or "tokens" (or plain text lines). Writes JSON lines.')  # fmt: skip
    a.add_argument(
        "--model", default=None, help="saved learner, Hub id or plain encoder (default MiniLM)"
    )
    a.add_argument("--support", required=True, help="labelled examples (JSON lines)")
    a.add_argument("--inputs", required=True, help="examples to label (JSON lines or plain text)")
    a.add_argument("--output", help="write predictions here instead of stdout")
    a.add_argument("--steps", type=int, help="inner steps (default: the learner's config)")
    a.add_argument("--finetune-after", type=int, metavar="STEPS", help=FINETUNE_AFTER_HELP)
    a.add_argument("--task", choices=("sequence", "token"), default="sequence",
                   help="task of a plain encoder (saved learners know theirs)")  # fmt: skip

    h = sub.add_parser("push", help="upload a saved learner folder to the Hugging Face Hub",
                       formatter_class=fmt, description="Creates the repo if needed and commits "
                       "the learner's own files (weights, config, tokenizer, model card) at once.")  # fmt: skip
    h.add_argument("--model", required=True, help="folder written by save_pretrained / train")
    h.add_argument("--repo-id", required=True, help="user/name or org/name")
    h.add_argument("--private", action="store_true", help="create the repo private")
    h.add_argument("--token", help="Hub token (default: HF_TOKEN or the saved login)")
    h.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or huggingface.co)")
    return p


def _read_jsonl(path: str) -> list[Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)."
        ) from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if line.lstrip().startswith("{"):
                raise ValueError(f"{path}:{n} is not valid JSON: {line[:80]!r}") from None
            rows.append({"text": line})  # a plain text line
        except RecursionError:
            raise ValueError(
                f"{path}:{n} nests lists or objects too deeply to read; a line holds one "
                '{"text": ...} or {"tokens": ...} object.'
            ) from None
    return rows


def _field(rows: list[Any], key: str, path: str) -> list[Any]:
    missing = [i + 1 for i, r in enumerate(rows) if not isinstance(r, dict) or key not in r]
    if missing:
        raise ValueError(f"{path}: lines {missing[:5]} have no {key!r} field.")
    return [r[key] for r in rows]


class _Override(typing.NamedTuple):
    hint: Any  # the config field's type hint
    help: str  # its description in the config docstring
    default: Any  # its dataclass default (dataclasses.MISSING where it has none)


def _config_override_fields() -> dict[str, _Override]:
    """Every `MetaTrainerConfig` setting a ``--key`` option may override; nested sections' keys
    are dotted (``optimizer.lr``)."""
    from metanlp.training.config import MetaTrainerConfig, field_help

    def walk(cls: type, prefix: str) -> dict[str, _Override]:
        helps, out = field_help(cls), {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                out.update(walk(hint, f"{prefix}{f.name}."))
                continue
            default = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            text = helps.get(f.name, "see docs/training.md")
            out[prefix + f.name] = _Override(hint, text, default)
        return out

    return walk(MetaTrainerConfig, "")


def _flag(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def _add_config_overrides(parser: argparse.ArgumentParser) -> None:
    """One ``--key VALUE`` option per config setting (``--key`` / ``--no-key`` for a boolean), its
    help taken from the config's docstring (`metanlp.training.config.field_help`) and its default
    from the dataclass: the options cannot drift from the config. A Hugging Face spelling
    (`HF_SPELLINGS`) of a setting is a second name of its option."""
    from metanlp.training.config import HF_SPELLINGS

    aliases: dict[str, list[str]] = {}
    for hf_name, key in HF_SPELLINGS.items():
        aliases.setdefault(key, []).append(_flag(hf_name))
    group = parser.add_argument_group(
        "config overrides", "replace one setting of the YAML file (whose values replace the "
        "defaults shown); VALUE is read as YAML (3, 0.1, true, null, [a, b], {inner_steps: 3}) "
        "except for text settings",
    )  # fmt: skip
    for key, field_ in _config_override_fields().items():
        text = field_.help.replace("``", "").replace("`", "").replace("%", "%%")
        if field_.default is not dataclasses.MISSING:
            shown = (
                field_.default if isinstance(field_.default, str) else json.dumps(field_.default)
            )
            text += f" (default: {shown})".replace("%", "%%")
        names = [_flag(key), *aliases.get(key, [])]
        if field_.hint is bool:
            group.add_argument(*names, dest=key, action=argparse.BooleanOptionalAction,
                               default=None, help=text)  # fmt: skip
        else:
            group.add_argument(*names, dest=key, metavar="VALUE", help=text)


def _parse_override(key: str, value: Any, hint: Any) -> Any:
    if hint is str or hint is bool:  # a boolean comes parsed from --key / --no-key
        return value
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint):
        return None if value == "null" else value  # optional text (data.data_dir)
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ValueError(
            f"{_flag(key)} {value!r} is not a YAML value (a number, true/false, "
            "null, a [list] or a {mapping}); quote text."
        ) from None


def _train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config settings given as ``train`` options (dotted keys for nested sections)."""
    return {
        key: _parse_override(key, value, field_.hint)
        for key, field_ in _config_override_fields().items()
        if (value := getattr(args, key)) is not None
    }


def cmd_train(args: argparse.Namespace) -> int:
    from metanlp.api import MetaLearner
    from metanlp.training import MetaTrainer, MetaTrainerConfig

    config = MetaTrainerConfig.from_yaml(args.config, **_train_overrides(args))
    trainer = MetaTrainer(config)
    state = trainer.train(resume_from_checkpoint=True if args.resume else None)
    folder = MetaLearner.from_trainer(trainer).save_pretrained(Path(config.output_dir) / "learner")
    print(_final_line(config.metric_for_best, state.best_metric, state.best_step, folder))
    return 0


def _final_line(metric: str, best: float | None, step: int | None, folder: Any) -> str:
    """``best accuracy: 33.3 % (step 2); learner saved to <folder>``, in the tables' units."""
    from metanlp.metrics.functional import format_score

    if best is None:
        return f"no meta-validation (data.val is not set); learner saved to {folder}"
    return f"best {metric}: {format_score(metric, best)} (step {step}); learner saved to {folder}"


def cmd_make_episodes(args: argparse.Namespace) -> int:
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler, NERSampler, save_episodes

    data = load_corpus(args.dataset, args.data_dir)
    common = {
        "n_way": args.n_way,
        "k_shot": args.k_shot,
        "q_query": args.q_query,
        "seed": args.seed,
        "name": args.dataset,
    }
    if "ner_tags" in data.column_names:
        sampler = NERSampler(data, types=args.classes, mode=args.mode, **common)
    else:
        sampler = ClassificationSampler(
            data, classes=args.classes, group_by=args.group_by, groups=args.groups, **common
        )
    meta = {
        "max_length": args.max_length,
        "n_way": args.n_way,
        "k_shot": args.k_shot,
        "q_query": args.q_query,
    }
    path = save_episodes(args.out, sampler.specs(args.n), sampler, metadata=meta)
    print(f"wrote {args.n} episodes to {path}")
    return 0


def _finetune(args: argparse.Namespace) -> dict[str, Any]:
    """``finetune=`` for `MetaLearner.from_pretrained` from ``--finetune-after`` (none if not given)."""
    if args.finetune_after is None:
        return {}
    if args.finetune_after < 0:
        raise ValueError(f"--finetune-after {args.finetune_after}: give 0 (off) or a step count.")
    return {"finetune": args.finetune_after or None}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from metanlp.api import MetaLearner
    from metanlp.baselines import FineTuneBaseline, FrozenPrototypes
    from metanlp.corpora import load_corpus
    from metanlp.episodes import load_episode_specs
    from metanlp.evaluation import comparison_table, evaluate_file
    from metanlp.models import FewShotModel, resolve_device

    if args.n_episodes is not None and args.n_episodes < 1:
        raise ValueError(f"--n-episodes {args.n_episodes}: evaluate at least 1 episode.")
    if args.device:
        resolve_device(args.device)  # a device this torch cannot use fails here, in one line
    specs, _ = load_episode_specs(args.episodes)
    task = "token" if specs[0].kind == "ner" else "sequence"
    methods: dict[str, Any] = {}
    tokenizer = None
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name, item
        learner = MetaLearner.from_pretrained(path, device=args.device, **_finetune(args))
        learner.eval_steps = args.steps
        methods[name] = learner
        tokenizer = tokenizer or learner.tokenizer
    if args.baselines:
        model = FewShotModel.from_pretrained(args.base_model, task=task, pooling="mean")
        if args.device:
            model.to(args.device)
        tokenizer = tokenizer or model.tokenizer
        if "finetune" in args.baselines:
            methods["finetune"] = FineTuneBaseline(model, steps=args.finetune_steps)
        if "prototypes" in args.baselines:
            methods["prototypes"] = FrozenPrototypes(model)
    if not methods:
        raise ValueError("Nothing to evaluate: give --model NAME=PATH and/or --baselines.")
    data = load_corpus(args.dataset, args.data_dir)
    results = evaluate_file(methods, args.episodes, {specs[0].dataset: data}, tokenizer,
                            n_episodes=args.n_episodes, output_dir=args.output_dir, device=args.device)  # fmt: skip
    print(comparison_table(results))
    print(f"per-episode values: {Path(args.output_dir) / 'results.json'}")
    return 0


def cmd_adapt_predict(args: argparse.Namespace) -> int:
    from metanlp.api import MetaLearner

    support, inputs = _read_jsonl(args.support), _read_jsonl(args.inputs)  # before the model
    learner = MetaLearner.from_pretrained(args.model, task=args.task, **_finetune(args))
    lines = []
    if learner.config.task == "token":
        tagger = learner.adapt(
            _field(support, "tokens", args.support),
            _field(support, "tags", args.support),
            steps=args.steps,
        )
        tokens = _field(inputs, "tokens", args.inputs)
        lines = [
            {"tokens": w, "tags": t} for w, t in zip(tokens, tagger.predict(tokens), strict=True)
        ]
    else:
        clf = learner.adapt(
            _field(support, "text", args.support),
            _field(support, "label", args.support),
            steps=args.steps,
        )
        texts = _field(inputs, "text", args.inputs)
        probs = clf.predict_proba(texts)
        for text, row in zip(texts, probs, strict=True):
            scores = {str(c): round(float(p), 6) for c, p in zip(clf.classes_, row, strict=True)}
            lines.append({"text": text, "label": clf.classes_[int(row.argmax())], "scores": scores})
    out = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(out, encoding="utf-8")
        except OSError as err:
            raise OSError(
                f"Cannot write --output {args.output} ({err.strerror or err}); pass a path in a "
                "folder you can write to."
            ) from None
    else:
        sys.stdout.write(out)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from metanlp.hub import push_folder

    url = push_folder(
        args.model,
        args.repo_id,
        private=args.private or None,
        token=args.token,
        endpoint=args.endpoint,
    )
    print(url)
    return 0


COMMANDS = {
    "train": cmd_train,
    "make-episodes": cmd_make_episodes,
    "evaluate": cmd_evaluate,
    "adapt-predict": cmd_adapt_predict,
    "push": cmd_push,
}


TRACEBACK_ENV = "METANLP_TRACEBACK"
"""Set to 1 to get the full traceback of a failing command instead of its one-line message."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line (``sys.argv[1:]`` by default), Hugging Face spellings accepted;
    an unknown option exits with usage and the closest real option."""
    parser = _parser()
    args, unknown = parser.parse_known_args(_hf_spellings(sys.argv[1:] if argv is None else argv))
    if unknown:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(_unknown_message(sub.choices[args.command], unknown))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metanlp`` command; returns the exit status.

    A failing command prints one line, ``metanlp <command>: error: <message>``, and exits with 2
    for bad input (configs, files, arguments: the message says what to fix) or 1 for anything
    else; ``METANLP_TRACEBACK=1`` shows the traceback instead.
    """
    args = parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as err:  # ctrl-C: `train` has written a checkpoint and says so
        print(f"metanlp {args.command}: {' '.join(str(err).split()) or 'interrupted'}",
              file=sys.stderr)  # fmt: skip
        return 130
    except Exception as err:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            raise
        print(f"metanlp {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, _INPUT_ERRORS) else 1


def _hf_spellings(argv: Sequence[str]) -> list[str]:
    """``--learning_rate`` -> ``--learning-rate``: options accept underscores as Hugging Face
    scripts write them (values and everything after ``--`` are left alone)."""
    out = list(argv)
    for i, token in enumerate(out):
        if token == "--":
            break
        if token.startswith("--"):
            name, eq, value = token.partition("=")
            out[i] = name.replace("_", "-") + eq + value
    return out


def _unknown_message(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """argparse's "unrecognized arguments" with the closest real option (`difflib`), matched on
    the whole flag and on its last dotted part (``--lr`` -> ``--optimizer.lr``)."""
    from metanlp.spec import closest

    flags = [t.partition("=")[0] for t in unknown if t.startswith("-")]
    message = f"unrecognized arguments: {' '.join(unknown)}"
    if not flags:
        if unknown[0].lower() in ("true", "false", "yes", "no", "on", "off"):
            message += "; a boolean option is a flag: --key (on) or --no-key (off), with no value"
        return message
    names = {}
    for option in parser._option_string_actions:
        names.setdefault(option, option)
        names.setdefault("--" + option.rsplit(".", 1)[-1].lstrip("-"), option)
    near = closest(flags[0], names)
    return message + (f"; did you mean {names[near]}?" if near is not None else "")


# Configuration, input-file and network errors, whose messages already say what to fix.
_INPUT_ERRORS = (ValueError, TypeError, KeyError, OSError)


def _one_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(text.split()) or "(no message)"
    if not isinstance(err, _INPUT_ERRORS):
        text = f"{type(err).__name__}: {text} (set {TRACEBACK_ENV}=1 for the traceback)"
    return text


if __name__ == "__main__":
    sys.exit(main())
