"""The decomposed learner's fine-tuned span typer (`metanlp.meta.span_typer`): its start is the
prototype classifier, its steps match plain autograd on a copied model, its "none" class is made
of the detected non-gold support spans, and its config is checked and saved."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from ner_helpers import small_decomposed_learner

from metanlp.api import MetaLearner
from metanlp.inputs import check_ner_inputs, encode_ner
from metanlp.meta.decomposed import TYPING, DecomposedConfig, gold_spans, typing_prototypes
from metanlp.meta.params import select_parameters
from metanlp.meta.span_typer import TYPER_DEFAULTS, non_gold
from metanlp.models import HEAD_PARAMETER_NAMES

WORDS = [["Ann", "met", "Bob", "Dylan", "today"], ["Carl", "left", "Rome"]]
TAGS = [["B-per", "O", "B-per", "I-per", "O"], ["B-per", "O", "B-loc"]]
QUERY = [["Dana", "visited", "Oslo"], ["Bob", "Dylan", "sang", "in", "Paris"]]


@pytest.fixture(scope="module")
def learner(single_thread):
    return small_decomposed_learner(24)


@pytest.fixture(scope="module")
def episode(learner, data_dir):
    from metanlp.corpora import load_corpus
    from metanlp.episodes import EpisodeCollator, NERSampler

    sampler = NERSampler(load_corpus("wnut16", data_dir), n_way=2, k_shot=1, mode="relaxed",
                         name="wnut16", seed=3)  # fmt: skip
    return EpisodeCollator(learner.tokenizer, max_length=24)(sampler.specs(1)[0], sampler.source)


def with_options(learner, **options):
    """The same learner (shared weights) with other algorithm options."""
    out = copy.copy(learner)
    out.algorithm = copy.copy(learner.algorithm)
    out.algorithm.config = dataclasses.replace(learner.algorithm.config, **options)
    return out


def test_zero_rates_keep_the_prototype_classifier_and_its_tags(learner):
    frozen = {"steps": 2, "lr": 0.0, "head_lr": 0.0}
    typer = with_options(learner, typing="finetune", typing_finetune=frozen).adapt(WORDS, TAGS)
    protos = learner.adapt(WORDS, TAGS)
    for name in TYPING:  # typing_inner_steps=0: the head is W = 2c/τ, b = -|c|²/τ exactly
        assert torch.equal(typer.fast[name], protos.fast[name])
    assert typer.predict(QUERY) == protos.predict(QUERY)


def test_typer_steps_match_plain_autograd_on_a_copied_model(learner, episode):
    options = {"steps": 3, "lr": 1e-3, "head_lr": 1e-2, "params": "top", "top_layers": 1}
    algo = with_options(learner, typing="finetune", typing_finetune=options).algorithm
    fast = algo.adapt(episode.support, episode.num_labels)

    model = copy.deepcopy(learner.model).eval()
    labels = episode.support["labels"]
    inputs = {k: episode.support[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        protos = typing_prototypes(*gold_spans(model.embed(**inputs), labels), episode.n_way)
    tau = algo.extra["typing.log_temperature"].detach().exp()
    head = [(2 * protos / tau).requires_grad_(), (-protos.pow(2).sum(-1) / tau).requires_grad_()]
    names = [n for n in select_parameters(model, "top", top_layers=1)
             if n not in HEAD_PARAMETER_NAMES]  # fmt: skip
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    body = [params[n].requires_grad_() for n in names]
    optimizer = torch.optim.AdamW([{"params": body, "lr": 1e-3}, {"params": head, "lr": 1e-2}],
                                  weight_decay=0.0)  # fmt: skip
    for _ in range(3):
        reps, types = gold_spans(model.embed(**inputs), labels)
        loss = F.cross_entropy(F.linear(reps, *head), types)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert sorted(n for n in fast if n.startswith("encoder.")) == sorted(names)
    for name in names:
        assert not torch.equal(params[name], dict(learner.model.named_parameters())[name])
        torch.testing.assert_close(fast[name], params[name].detach(), atol=2e-6, rtol=1e-4)
    for name, tensor in zip(TYPING, head, strict=True):
        torch.testing.assert_close(fast[name], tensor.detach(), atol=2e-5, rtol=1e-4)


def test_none_class_is_the_detected_non_gold_support_spans(learner):
    """Hand-worked: gold mentions Ann, Bob Dylan | Carl, Rome; the detector is made to find
    Ann, met, Bob | Carl left, Rome. The none class is then exactly met, Bob | Carl left."""
    algo = with_options(learner, typing="finetune", typing_none_class=True).algorithm
    detected = [[(0, 1), (1, 2), (2, 3)], [(0, 2), (2, 3)]]
    gold = [[(0, 1), (2, 4)], [(0, 1), (2, 3)]]
    assert non_gold(detected, gold) == [[(1, 2), (2, 3)], [(0, 2)]]
    check = check_ner_inputs(WORDS, TAGS, None)
    support, _ = encode_ner(learner.tokenizer, WORDS, check.tag_ids, 24)
    algo.detect = lambda fast, feats, starts: detected  # the hand-worked detector
    with torch.no_grad():
        feats = algo.features(support)
    fast = learner.algorithm.adapt(support, 3)
    head, config, none = algo.typer_start(fast, feats, support)
    assert none == [[(1, 2), (2, 3)], [(0, 2)]]
    assert config == dataclasses.replace(config, **TYPER_DEFAULTS)
    starts = (support["labels"] != -100).nonzero().tolist()
    word = {}  # (row, word index) -> state of its first sub-token
    for r, t in starts:
        word[(r, sum(1 for rr, _ in starts if rr == r and _ < t))] = feats[r, t]
    c = torch.stack([word[(0, 1)], word[(0, 2)], (word[(1, 0)] + word[(1, 1)]) / 2]).mean(0)
    tau = algo.extra["typing.log_temperature"].detach().exp()
    assert head[TYPING[0]].shape[0] == 3  # two types + none
    torch.testing.assert_close(head[TYPING[0]][2], 2 * c / tau)
    torch.testing.assert_close(head[TYPING[1]][2], -c.pow(2).sum() / tau)


@pytest.mark.parametrize(
    "options,match",
    [({"typing": "crf"}, "typing="),
     ({"typing_none_class": True}, "typing='finetune'"),
     ({"typing_finetune": {"steps": 3}}, "typing='finetune'"),
     ({"typing": "finetune", "typing_finetune": {"steps": 0}}, "steps"),
     ({"typing": "finetune", "typing_finetune": {"rate": 1}}, "unknown field"),
     ({"typing": "finetune", "typing_finetune": {"params": "some"}}, "params"),
     ({"typing": "finetune", "o_handling": "prototypes"}, "o_handling"),
     ({"typing": "finetune", "typing_none_class": "yes"}, "typing_none_class")],
    ids=["typing", "none-without-typer", "settings-without-typer", "zero-steps", "unknown-field",
         "params", "o-prototypes", "none-not-bool"],
)  # fmt: skip
def test_config_errors_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        DecomposedConfig(**options)


def test_typer_config_is_stored_whole_and_round_trips(learner, tmp_path):
    config = DecomposedConfig(typing="finetune", typing_finetune=4)
    assert config.typing_finetune == {**TYPER_DEFAULTS, "steps": 4, "weight_decay": 0.0}
    assert DecomposedConfig.from_dict(config.to_dict()) == config
    typer = MetaLearner.from_pretrained(
        task="token", algorithm="decomposed", adapt="top", adapt_options={"top_layers": 1},
        algorithm_config={"inner_steps": 2, "typing": "finetune", "typing_finetune": {"steps": 2},
                          "typing_none_class": True},
        max_length=24, device="cpu",
    )  # fmt: skip
    assert typer.algorithm.config.typing_finetune["steps"] == 2
    typer.save_pretrained(tmp_path / "learner")
    loaded = MetaLearner.from_pretrained(tmp_path / "learner", device="cpu")
    assert loaded.algorithm.config == typer.algorithm.config
    assert loaded.adapt(WORDS, TAGS).predict(QUERY) == typer.adapt(WORDS, TAGS).predict(QUERY)


def test_a_typer_fitted_to_the_support_types_its_gold_spans(learner, episode):
    """Typing alone (`gold_span_types`): a typer trained hard on the support types the
    support's own gold spans right, where the prototype head need not."""
    fit = {"steps": 30, "lr": 1e-3, "head_lr": 5e-2, "params": "top", "top_layers": 1}
    algo = with_options(learner, typing="finetune", typing_finetune=fit).algorithm
    fast = algo.adapt(episode.support, episode.num_labels)
    predicted, gold = algo.gold_span_types(fast, episode.support, episode.num_labels)
    assert len(gold) >= episode.n_way and predicted == gold
