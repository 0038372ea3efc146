"""What the accuracy benchmark scores: settings, fixed test episode files and the learners.

A *setting* is a held-out few-shot task family (BBC News topics, one tweet sentiment domain never
seen in meta-training, SNIPS intents, WNUT-16 entity types disjoint from the training types). Its
test episodes are drawn once with a fixed seed and written to a JSON episode file, so every
method (and every later run) is scored on the same episodes; a default-size run uses a prefix of
the 600 episodes of a ``--full`` run.

Meta-trained learners come from `metanlp.training.MetaTrainer` runs on the tweet domains of
``metanlp/configs/default.yaml`` (text) or on the WNUT-16 training types (NER), one run per
variant, cached under ``benchmarks/.cache/learners/<hash>`` so a second benchmark run (or another
size) reuses them; a learner saved elsewhere (e.g. by a recipe) can be given instead.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT

logger = logging.getLogger(__name__)

CACHE = REPO_ROOT / "benchmarks" / ".cache"
EPISODE_DIR = CACHE / "accuracy_episodes"
LEARNER_DIR = CACHE / "learners"
TEST_SEED = 20240
FULL_EPISODES = 600
VALIDATE_FROM_STEPS = 100
"""Meta-training runs this long or longer keep the best of their meta-validations (default.yaml's
held-out 'deflategate' domain); shorter ones keep their last step."""
# Tweet domains: meta-training uses default.yaml's five, meta-validation "deflategate";
# "coachella" is never seen before the test.
HELD_OUT_DOMAIN = "coachella"
# WNUT-16 types split for NER: the six frequent types train, four others are only ever tested.
NER_TRAIN_TYPES = ["person", "geo-loc", "other", "company", "facility", "product"]
NER_TEST_TYPES = ["musicartist", "sportsteam", "tvshow", "movie"]


@dataclass(frozen=True)
class Setting:
    """One held-out evaluation setting: where its episodes come from and how they are shaped."""

    name: str
    corpus: str
    kind: str  # "classification" | "ner"
    sampler: dict[str, Any]
    max_length: int
    title: str
    extra: str | None = None  # "bigbench": needs the optional corpus

    @property
    def family(self) -> str:
        """Which meta-trained learners apply: ``"text"`` or ``"ner"``."""
        return "ner" if self.kind == "ner" else "text"


def _bbc(k: int) -> Setting:
    return Setting(
        f"bbc_5w{k}s",
        "bbc_news",
        "classification",
        {"n_way": 5, "k_shot": k, "q_query": 5},
        128,
        f"BBC News topics, 5-way {k}-shot",
    )


def _tweets(k: int) -> Setting:
    return Setting(
        f"tweets_3w{k}s",
        "tweets",
        "classification",
        {
            "n_way": None,
            "k_shot": k,
            "q_query": 8,
            "group_by": "domain",
            "groups": [HELD_OUT_DOMAIN],
        },
        64,
        f"Tweet sentiment, held-out domain '{HELD_OUT_DOMAIN}', 3-way {k}-shot",
    )


def _snips(k: int) -> Setting:
    return Setting(
        f"snips_7w{k}s",
        "bigbench/intent_recognition",
        "classification",
        {"n_way": 7, "k_shot": k, "q_query": 5},
        64,
        f"SNIPS intents (bigbench), 7-way {k}-shot",
        extra="bigbench",
    )


def _bigbench(task: str, short: str, n_way: int, k: int, q: int = 10) -> Setting:
    return Setting(
        f"{short}_{n_way}w{k}s",
        f"bigbench/{task}",
        "classification",
        {"n_way": n_way, "k_shot": k, "q_query": q},
        64,
        f"BIG-bench {task}, {n_way}-way {k}-shot (held out of the general learner by name)",
        extra="bigbench",
    )


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in [
        _bbc(1),
        _bbc(5),
        _tweets(4),
        _tweets(8),
        _tweets(16),
        _snips(1),
        _snips(5),
        _bigbench("social_support", "socialsupport", 3, 5),
        _bigbench("irony_identification", "irony", 2, 5),
        Setting(
            "wnut_ner_3w1s",
            "wnut16",
            "ner",
            {"n_way": 3, "k_shot": 1, "q_query": 1, "types": NER_TEST_TYPES, "mode": "relaxed"},
            64,
            "WNUT-16 NER, 3-way 1~2-shot on types unseen in meta-training (relaxed)",
        ),
    ]
}


@dataclass(frozen=True)
class Variant:
    """A metanlp method: an algorithm and its options, meta-trained per family."""

    name: str
    algorithm: str
    algorithm_config: dict[str, Any] = field(default_factory=dict)
    families: tuple[str, ...] = ("text",)
    recipe: str | None = None  # built only by this recipe; given with --learner NAME=FOLDER


_LORA = {"inner_steps": 3, "inner_lr": 0.1, "eval_inner_steps": 10}
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("maml", "maml", dict(_LORA), ("text", "ner")),
        Variant("fomaml", "fomaml", dict(_LORA)),
        Variant("anil", "anil", {"inner_steps": 5, "inner_lr": 0.5, "eval_inner_steps": 20}),
        Variant("mamlpp", "mamlpp", {**_LORA, "first_order_epochs": 1, "msl_epochs": 2}),
        Variant("protomaml", "protomaml", {**_LORA, "first_order": True}, ("text", "ner")),
        Variant("protonet", "protonet", {}, ("text", "ner")),
        Variant("general", "protonet", {}, ("text",), recipe="recipes/general_learner.py"),
        # The issue-17 ablation (README): the recipe at one reduced size, --mode hybrid / smlmt
        # / labelled, so that one merged results file holds the three learners by name.
        Variant(
            "general_hybrid100", "protonet", {}, ("text",), recipe="recipes/general_learner.py"
        ),
        Variant("general_smlmt", "protonet", {}, ("text",), recipe="recipes/general_learner.py"),
        Variant("general_labelled", "protonet", {}, ("text",), recipe="recipes/general_learner.py"),
    ]
}
"""metanlp's meta-trained variants: second order (maml), first order (fomaml), ANIL, MAML++
(per-layer-per-step learned inner rates, Meta-SGD style; second order after its first epoch),
Proto-MAML (first order, as in its paper's cheaper variant) and ProtoNet. All adapt LoRA (r=8,
query/value) + head as in default.yaml; ANIL adapts the head only. ``general`` is the general
learner of `recipes/general_learner.py` (never trained here: give it with ``--learner``); it
adapts with its support-set policy (`metanlp.meta.policy`)."""

FT_SUFFIX = "+ft"
"""``VARIANT+ft``: the same learner, then test-time fine-tuning of every weight from its adapted
state (`metanlp.meta.finetune`, as many AdamW steps as the fine-tune baseline)."""


NOPOLICY_SUFFIX = "-nopolicy"
"""``VARIANT-nopolicy``: the same learner with its adaptation policy turned off (the ablation)."""


EARLIER_POLICY: dict[str, Any] = {
    "steps": (0, 4, 8, 16), "lrs": (1e-4, 5e-4),
    "fallback_steps": 10, "fallback_lr": 5e-5, "fallback_params": "all",
}  # fmt: skip
"""`AdaptPolicy` fields of the policy's defaults before 2026-12-02: two rates up to 16 steps; at
one shot the plain fine-tuning baseline's settings (every weight, 10 steps at 5e-5)."""

EARLIERPOLICY_SUFFIX = "-earlierpolicy"
"""``VARIANT-earlierpolicy``: the same learner adapting with `EARLIER_POLICY` (the timing study)."""


def variant_of(method: str) -> str | None:
    """The metanlp variant a method name scores (``protomaml+ft`` -> ``protomaml``), else None."""
    base = method.removesuffix(FT_SUFFIX).removesuffix(NOPOLICY_SUFFIX)
    base = base.removesuffix(EARLIERPOLICY_SUFFIX)
    return base if base in VARIANTS else None


METANLP_METHODS = [m for v in VARIANTS for m in (v, v + FT_SUFFIX)] + [
    v + suffix
    for v in VARIANTS
    if VARIANTS[v].recipe
    for suffix in (NOPOLICY_SUFFIX, EARLIERPOLICY_SUFFIX)
]


def episode_file(setting: Setting, data_dir: str | None = None) -> Path:
    """The setting's fixed test episodes (drawn once, `FULL_EPISODES` of them, seed `TEST_SEED`)."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import ClassificationSampler, NERSampler, save_episodes

    path = EPISODE_DIR / f"{setting.name}.json"
    if path.is_file():
        return path
    dataset = load_corpus(setting.corpus, data_dir)
    name = setting.corpus.split("/")[-1]
    cls = NERSampler if setting.kind == "ner" else ClassificationSampler
    sampler = cls(dataset, name=name, seed=TEST_SEED, **setting.sampler)
    specs = sampler.specs(FULL_EPISODES)
    meta = {"setting": setting.name, "max_length": setting.max_length, "seed": TEST_SEED}
    save_episodes(path, specs, sampler, metadata=meta)
    logger.info("wrote %d test episodes to %s", len(specs), path)
    return path


def load_setting_episodes(setting: Setting, tokenizer: Any, n: int, data_dir: str | None = None):
    """The first ``n`` fixed test episodes of a setting, tokenized for the shared MiniLM."""
    from metanlp.corpora import load_corpus
    from metanlp.episodes import load_episode_specs, load_episodes

    path = episode_file(setting, data_dir)
    specs, _ = load_episode_specs(path)
    if n > len(specs):
        raise ValueError(f"{path} holds {len(specs)} episodes; {n} were asked for.")
    dataset = load_corpus(setting.corpus, data_dir)
    name = setting.corpus.split("/")[-1]
    # load_episodes rebuilds every spec of the file; trimming the specs first keeps it cheap.
    trimmed = path.with_name(f".{path.stem}.first{n}.json")
    if not trimmed.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data["episodes"] = data["episodes"][:n]
        trimmed.write_text(json.dumps(data), encoding="utf-8")
    return load_episodes(
        trimmed, {name: dataset}, tokenizer=tokenizer, max_length=setting.max_length
    )


def training_config(variant: Variant, family: str, steps: int, base: str = "default") -> dict:
    """The `MetaTrainerConfig` dict of one variant's meta-training run (bench-sized)."""
    from metanlp.training.config import MetaTrainerConfig

    data = MetaTrainerConfig.from_yaml(base).to_dict()
    data.update(
        algorithm=variant.algorithm,
        algorithm_config=copy.deepcopy(variant.algorithm_config),
        max_steps=steps,
        eval_every=max(steps // 2, 1),
        save_every=None,
        report_to=[],
        progress_bar=False,
    )
    data["optimizer"]["warmup_steps"] = min(data["optimizer"]["warmup_steps"], steps // 5)
    if steps < VALIDATE_FROM_STEPS:
        # Short CPU runs: meta-validation would cost as much as the training; keep the last step.
        data["data"]["val"] = None
        data["keep_best"] = False
    if family == "ner":
        data["data"]["train"] = [
            {"dataset": "wnut16", "n_way": 3, "k_shot": 1, "q_query": 1,
             "types": NER_TRAIN_TYPES, "mode": "relaxed"}
        ]  # fmt: skip
        data["data"]["val"] = None
        data["keep_best"] = False
        data["task"] = "token"
    return data


def learner_for(
    variant: Variant, family: str, steps: int, base: str = "default", retrain: bool = False
):
    """A meta-trained `MetaLearner` for ``variant`` (trained now, or loaded from the cache)."""
    from metanlp.api import MetaLearner

    config = training_config(variant, family, steps, base)
    key = hashlib.sha256(json.dumps([family, config], sort_keys=True).encode()).hexdigest()[:12]
    run_dir = LEARNER_DIR / f"{variant.name}-{family}-{steps}-{key}"
    saved = run_dir / "learner"
    if saved.is_dir() and not retrain:
        logger.info("reusing the meta-trained %s (%s) from %s", variant.name, family, saved)
        return MetaLearner.from_pretrained(saved, device="cpu" if not _cuda() else None)
    learner = _train(config, family, run_dir)
    learner.save_pretrained(saved)
    return learner


def _train(config: dict, family: str, run_dir: Path):
    from metanlp.api import MetaLearner
    from metanlp.training import MetaTrainer
    from metanlp.training.config import MetaTrainerConfig

    # A fresh run each time (a saved learner is reused above, never a half-finished run).
    config = {**config, "output_dir": str(run_dir / "run"), "overwrite_output_dir": True}
    cfg = MetaTrainerConfig.from_dict(config)
    trainer = MetaTrainer(cfg)
    trainer.train()
    return MetaLearner.from_trainer(trainer)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
