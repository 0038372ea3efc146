"""Classes described by their names (issue 29): zero-shot, 1 and 5 shots, with and without names.

    python benchmarks/bench_names.py --validate          # choose template + default weight (tweets)
    python benchmarks/bench_names.py                     # held-out corpora, small size
    .venv-bench/bin/python benchmarks/bench_names.py --setfit   # SetFit's templated zero-shot too
    ... --episodes 10 --corpora bbc coachella --learner outputs/general_learner/meta/learner

The learner is ProtoNet with names (``ProtoNetConfig(names=True)``, `metanlp.names`) and the
adaptation policy; by default on the plain MiniLM (no meta-training: the weights w(K) are their
validated initial value), or any saved names learner (``--learner``). Every method is scored by
`metanlp.evaluation.evaluate` on the same fixed episodes of each (corpus, shots) setting:

- 0 shots: the learner's ``zero_shot`` (names alone); the frozen encoder's name similarity
  (cosine of the mean-pooled MiniLM embedding to "this news article is about {name}", the
  measurement of the issue); SetFit's templated zero-shot (``--setfit``, in ``.venv-bench``:
  ``setfit.get_templated_dataset`` then SetFit training on those synthetic examples; its
  classifier depends only on the names, so it is trained once per corpus).
- 1 and 5 shots: the learner with names; the same learner without names (``label_names=False``);
  logistic regression on frozen embeddings; the learner's zero-shot on the same episodes (so
  "names + examples" and "names alone" are paired); and two controls: names permuted among the
  classes (a cyclic shift), and meaningless names (``LABEL_i``, which the learner must detect).

``--validate`` scores candidate templates (0 shots) and default weights (1 shot) on tweets only
(sentiment in the ``airlines`` and ``apple`` domains, and the tweet *domain* as a 4-way topic
task without ``coachella``), never on the held-out corpora. Results go to
``benchmarks/results/names{,_validation}.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `metanlp` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from benchmarks.common import REPO_ROOT, markdown_table, provenance, write_markdown

RESULTS = REPO_ROOT / "benchmarks" / "results"
NEWS_TEMPLATE = "this news article is about {}"
TEMPLATES = ("{}", "this text is about {}", "this is about {}", "this text is {}")
WEIGHTS = (0.5, 1.0, 2.0, 4.0)
CORPORA = {  # name -> (corpus, tweet domain or None, n_way)
    "bbc": ("bbc_news", None, 5),
    "coachella": ("tweets", "coachella", 3),
    "banking77": ("banking77", None, 10),  # 10 of the 77 intents per episode (held out, issue 27)
}
VALIDATION_DOMAINS = ("airlines", "apple")
TOPIC_DOMAINS = ("airlines", "apple", "deflategate", "driverless_cars")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help="corpora folder (default $METANLP_DATA_DIR)")
    p.add_argument("--corpora", nargs="+", default=["bbc", "coachella"], choices=list(CORPORA))
    p.add_argument("--shots", nargs="+", type=int, default=[0, 1, 5])
    p.add_argument("--episodes", type=int, default=8, help="episodes per setting")
    p.add_argument("--query", type=int, default=8, help="query texts per class")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--learner", default=None, help="a saved names learner (default: MiniLM)")
    p.add_argument("--validate", action="store_true", help="choose template/weight on tweets")
    p.add_argument("--setfit", action="store_true", help="SetFit's templated zero-shot")
    p.add_argument("--out", default=None, help="results stem (default names / names_validation)")
    p.add_argument("--results-dir", default=str(RESULTS), help="where the results files go")
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args(argv)


# ---- methods: each has query_logits(episode) ------------------------------------------------
class NamesMethod:
    """The learner's user API on an episode: ``adapt`` (or ``zero_shot``) then ``predict_proba``.

    ``mode``: ``"names"`` (the labels are the class names), ``"no_names"`` (``label_names=False``),
    ``"permuted"`` (each class described by another class's name), ``"meaningless"`` (labels
    ``LABEL_i``), ``"zero_shot"`` (no examples).
    """

    def __init__(self, learner: Any, mode: str, policy: Any = True) -> None:
        self.learner, self.mode, self.policy = learner, mode, policy
        self.decisions: list[dict[str, Any]] = []

    def query_logits(self, episode: Any) -> torch.Tensor:
        names = list(episode.label_names)
        texts = list(episode.support_inputs)
        ids = [int(y) for y in episode.support_targets]
        if self.mode == "zero_shot":
            clf = self.learner.zero_shot(names)
        elif self.mode == "meaningless":
            classes = [f"LABEL_{i}" for i in range(len(names))]
            clf = self.learner.adapt(
                texts, [classes[i] for i in ids], label_names=classes, policy=self.policy
            )
        else:
            label_names: Any = {"names": None, "no_names": False}.get(self.mode)
            if self.mode == "permuted":
                label_names = {n: names[(i + 1) % len(names)] for i, n in enumerate(names)}
            clf = self.learner.adapt(
                texts, [names[i] for i in ids], label_names=label_names, policy=self.policy
            )
        order = [clf.classes_.index(c) for c in (names if self.mode != "meaningless" else classes)]
        self.decisions.append(clf.decision.to_dict() if clf.decision else {})
        proba = torch.as_tensor(clf.predict_proba(list(episode.query_inputs)))[:, order]
        return proba.clamp_min(1e-12).log().float()


class FrozenNameSimilarity:
    """Cosine of the frozen encoder's unit mean-pooled embedding of each query text to that of
    ``template.format(name)``, per class: the issue's zero-shot measurement."""

    def __init__(self, model: Any, template: str = NEWS_TEMPLATE, max_length: int = 128) -> None:
        self.model, self.template, self.max_length = model, template, max_length

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        from metanlp.models import model_inputs

        out = []
        for start in range(0, len(texts), 32):
            enc = self.model.tokenizer(texts[start : start + 32], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")  # fmt: skip
            out.append(F.normalize(self.model.embed(**model_inputs(enc)), dim=-1))
        return torch.cat(out)

    def query_logits(self, episode: Any) -> torch.Tensor:
        names = [self.template.format(describe(n)) for n in episode.label_names]
        return 20.0 * self.embed(list(episode.query_inputs)) @ self.embed(names).T


class SetFitZeroShot:
    """SetFit's zero-shot recipe: ``get_templated_dataset`` (``sample_size`` synthetic
    examples per class, "This sentence is {}") and SetFit training on them; one model per set of
    names (it depends on nothing else). Only in ``.venv-bench``."""

    def __init__(self, sample_size: int = 8, seed: int = 42) -> None:
        self.sample_size, self.seed = sample_size, seed
        self.models: dict[tuple[str, ...], Any] = {}
        self.train_seconds: dict[str, float] = {}

    def model_for(self, names: list[str]) -> Any:
        """The model of these names in sorted order (episodes order their classes at random)."""
        key = tuple(sorted(names))
        if key not in self.models:
            from setfit import SetFitModel, Trainer, TrainingArguments, get_templated_dataset

            from metanlp.models import default_model_path

            began = time.perf_counter()
            data = get_templated_dataset(
                candidate_labels=[describe(n) for n in key], sample_size=self.sample_size
            )
            model = SetFitModel.from_pretrained(str(default_model_path()))
            args = TrainingArguments(batch_size=16, num_epochs=1, seed=self.seed,
                                     save_strategy="no", report_to="none")  # fmt: skip
            Trainer(model=model, args=args, train_dataset=data).train()
            self.models[key] = model
            self.train_seconds[" / ".join(key)] = time.perf_counter() - began
        return self.models[key]

    def query_logits(self, episode: Any) -> torch.Tensor:
        names = list(episode.label_names)
        model = self.model_for(names)
        order = [sorted(names).index(n) for n in names]
        proba = torch.as_tensor(model.predict_proba(list(episode.query_inputs))).double()[:, order]
        return proba.clamp_min(1e-12).log().float()


def describe(name: str) -> str:
    from metanlp.names import describe_label

    return describe_label(name)


# ---- episodes ------------------------------------------------------------------------------
def episodes_for(corpus: str, domain: str | None, n_way: int, shots: int, args, collator) -> list:
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler

    data = load_corpus(corpus, args.data)
    grouped = {"group_by": "domain", "groups": [domain]} if domain else {}
    sampler = ClassificationSampler(
        data, n_way=n_way, k_shot=max(shots, 1), q_query=args.query, seed=args.seed + shots,
        name=corpus, collator=collator, **grouped,
    )  # fmt: skip
    return [sampler.episode(i) for i in range(args.episodes)]


def topic_episodes(shots: int, args, collator) -> list:
    """The tweet domain as the class (4 non-held-out domains): a topic task for validation."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler

    data = load_corpus("tweets", args.data).filter(lambda r: r["domain"] in TOPIC_DOMAINS)
    data = data.remove_columns("label").rename_column("domain", "label")
    data = data.class_encode_column("label")
    sampler = ClassificationSampler(
        data, n_way=4, k_shot=max(shots, 1), q_query=args.query, seed=args.seed + 100 + shots,
        name="tweets_domains", collator=collator,
    )  # fmt: skip
    return [sampler.episode(i) for i in range(args.episodes)]


def names_learner(args, force_plain: bool = False, **config: Any) -> Any:
    from metanlp import MetaLearner

    if args.learner and not force_plain:
        return MetaLearner.from_pretrained(args.learner)
    learner = MetaLearner.from_pretrained(
        algorithm="protonet", adapt="all", max_length=args.max_length,
        algorithm_config={"names": True, **config},
    )  # fmt: skip
    return learner


def summarise(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    return {r["method"]: r["summary"]["accuracy"] for r in results}


def paired(results: list[dict[str, Any]], a: str, b: str) -> dict[str, float] | None:
    from metanlp.evaluation import paired_difference

    by = {r["method"]: r for r in results}
    if a not in by or b not in by:
        return None
    return paired_difference(by[a], by[b], "accuracy")


# ---- runs ----------------------------------------------------------------------------------
def run_validation(args) -> dict[str, Any]:
    from metanlp.episodes import EpisodeCollator
    from metanlp.evaluation import evaluate

    out: dict[str, Any] = {"templates": {}, "weights": {}}
    learner = names_learner(args)
    collator = EpisodeCollator(learner.tokenizer, args.max_length)
    tasks = {f"tweets/{d}": ("tweets", d, 3) for d in VALIDATION_DOMAINS}
    sets = {t: episodes_for(c, d, n, 0, args, collator) for t, (c, d, n) in tasks.items()}
    sets["tweets/domains"] = topic_episodes(0, args, collator)
    for template in TEMPLATES:
        learner.algorithm.config = dataclasses.replace(
            learner.algorithm.config, name_template=template
        )
        accs = {}
        for task, eps in sets.items():
            res = evaluate({"zero_shot": NamesMethod(learner, "zero_shot")}, eps, progress=False)
            accs[task] = res[0]["summary"]["accuracy"]["mean"]
        out["templates"][template] = accs
        print(f"template {template!r}: {accs}", flush=True)
    best = max(TEMPLATES, key=lambda t: sum(out["templates"][t].values()))
    out["chosen_template"] = best
    sets1 = {t: episodes_for(c, d, n, 1, args, collator) for t, (c, d, n) in tasks.items()}
    sets1["tweets/domains"] = topic_episodes(1, args, collator)
    for weight in WEIGHTS:
        learner = names_learner(args, name_template=best, name_weight=weight)
        accs = {}
        for task, eps in sets1.items():
            res = evaluate({"names": NamesMethod(learner, "names")}, eps, progress=False)
            accs[task] = res[0]["summary"]["accuracy"]["mean"]
        out["weights"][str(weight)] = accs
        print(f"weight {weight}: {accs}", flush=True)
    out["chosen_weight"] = max(WEIGHTS, key=lambda w: sum(out["weights"][str(w)].values()))
    return out


def run_benchmark(args, save: Any = None) -> dict[str, Any]:
    from metanlp.baselines import FrozenLogisticRegression
    from metanlp.episodes import EpisodeCollator
    from metanlp.evaluation import evaluate

    learner = names_learner(args)
    # The baselines run on the pretrained MiniLM, not on a meta-trained learner's encoder.
    frozen = learner.model if args.learner is None else names_learner(args, force_plain=True).model
    collator = EpisodeCollator(learner.tokenizer, args.max_length)
    out: dict[str, Any] = {"settings": {}}
    setfit = SetFitZeroShot() if args.setfit else None
    for corpus in args.corpora:
        source, domain, n_way = CORPORA[corpus]
        for shots in args.shots:
            episodes = episodes_for(source, domain, n_way, shots, args, collator)
            if shots == 0:
                methods: dict[str, Any] = {
                    "names_zero_shot": NamesMethod(learner, "zero_shot"),
                    "frozen_name_similarity": FrozenNameSimilarity(
                        frozen, NEWS_TEMPLATE, args.max_length
                    ),  # fmt: skip
                }
                if setfit is not None:
                    methods["setfit_zero_shot"] = setfit
            else:
                methods = {
                    mode: NamesMethod(learner, mode)
                    for mode in ("names", "no_names", "permuted", "meaningless")
                }
                methods["frozen_lr"] = FrozenLogisticRegression(frozen)
                # The same episodes' names alone: "one example must not make it worse", paired.
                methods["names_zero_shot"] = NamesMethod(learner, "zero_shot")
            began = time.perf_counter()
            results = evaluate(methods, episodes, progress=False, seed=args.seed)
            key = f"{corpus}_{n_way}w{shots}s"
            setting = {
                "corpus": source, "domain": domain, "n_way": n_way, "shots": shots,
                "episodes": len(episodes), "query_per_class": args.query,
                "accuracy": summarise(results),
                "seconds_per_episode": {r["method"]: r["seconds"] / len(episodes) for r in results},
                "paired": {},
                "decisions": {n: m.decisions for n, m in methods.items() if hasattr(m, "decisions")},
            }  # fmt: skip
            first = "names_zero_shot" if shots == 0 else "names"
            for other in setting["accuracy"]:
                if other != first:
                    setting["paired"][f"{first} - {other}"] = paired(results, first, other)
            if setfit is not None:
                setting["setfit_train_seconds"] = dict(setfit.train_seconds)
            out["settings"][key] = setting
            if save is not None:  # after every setting, so a long run keeps what it measured
                save(out)
            print(f"{key} ({time.perf_counter() - began:.0f} s): " + ", ".join(
                f"{m} {100 * s['mean']:.1f}±{100 * s['ci']:.1f}" for m, s in setting["accuracy"].items()
            ), flush=True)  # fmt: skip
    return out


def pct(stat: dict[str, float] | None) -> str:
    if not stat or stat.get("mean") is None or math.isnan(stat["mean"]):
        return "—"
    return f"{100 * stat['mean']:+.1f} ± {100 * stat['ci']:.1f}"


def report(result: dict[str, Any], path: Path, title: str) -> None:
    sections = []
    if "settings" in result:
        for key, s in result["settings"].items():
            rows = [
                [m, f"{100 * a['mean']:.1f} ± {100 * a['ci']:.1f}",
                 f"{s['seconds_per_episode'][m]:.2f}"]
                for m, a in s["accuracy"].items()
            ]  # fmt: skip
            diffs = [[k, pct(v)] for k, v in s["paired"].items()]
            sections.append(
                f"## {key} ({s['episodes']} episodes, {s['query_per_class']} query per class)\n\n"
                + markdown_table(["method", "accuracy %", "s / episode"], rows)
                + "\n\nPaired differences (points, 95 % interval):\n\n"
                + markdown_table(["difference", "points"], diffs)
            )
    if "templates" in result:
        tasks = list(next(iter(result["templates"].values())))
        sections.append(
            "## Templates (0 shots)\n\n" + markdown_table(
                ["template", *tasks],
                [[repr(t), *(f"{100 * v[k]:.1f}" for k in tasks)] for t, v in result["templates"].items()],
            ) + f"\n\nchosen: {result['chosen_template']!r}"
        )  # fmt: skip
        sections.append(
            "## Default weight w (1 shot)\n\n" + markdown_table(
                ["w", *tasks],
                [[w, *(f"{100 * v[k]:.1f}" for k in tasks)] for w, v in result["weights"].items()],
            ) + f"\n\nchosen: {result['chosen_weight']}"
        )  # fmt: skip
    prov = result["provenance"]
    sections.append(f"Command: `{prov['command']}`; commit {prov['git_commit']}; {prov['date']}.")
    write_markdown(path, title, sections)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    began = time.perf_counter()
    folder = Path(args.results_dir)
    prov = provenance(argv)

    def save(result: dict[str, Any]) -> None:
        result.update(provenance=prov, arguments=vars(args))
        result["seconds"] = round(time.perf_counter() - began, 1)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        report(result, folder / f"{stem}.md", title)

    if args.validate:
        stem = args.out or "names_validation"
        title = "Class names: template and default weight, chosen on tweets (not held out)"
        result = run_validation(args)
    else:
        stem = args.out or "names"
        title = "Class names on held-out corpora: 0, 1 and 5 shots"
        result = run_benchmark(args, save)
    save(result)
    print(f"wrote {folder / stem}.json/.md ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
