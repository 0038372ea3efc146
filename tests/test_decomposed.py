"""The decomposed NER learner: typing prototypes against a plain computation (windows past
``max_length`` included), meta-gradients, decoding, O handling and the `MetaLearner` surface."""

from __future__ import annotations

import pytest
import torch
from ner_helpers import small_decomposed_learner

from metanlp.api import MetaLearner
from metanlp.meta.decomposed import TYPING, DecomposedConfig
from metanlp.meta.spans import FORBIDDEN, estimate_transitions, tags_to_bio

MAX_LENGTH = 12
# The second sentence's only mention lies past max_length: its support window is ["Paris"].
WORDS = [["Ann", "met", "Bob", "Dylan"], ["the"] * 20 + ["Paris"], ["Carl", "left", "Rome"]]
TAGS = [["B-per", "O", "B-per", "I-per"], ["O"] * 20 + ["B-loc"], ["B-per", "O", "B-loc"]]


@pytest.fixture(scope="module")
def learner(single_thread):
    return small_decomposed_learner(MAX_LENGTH)


def _word_states(learner, words):
    """First-sub-token state of every word of one (short) sentence, in float64."""
    enc = learner.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        hidden = learner.model.embed(enc["input_ids"], enc["attention_mask"])[0].double()
    first = {}
    for t, w in enumerate(enc.word_ids()):
        if w is not None and w not in first:
            first[w] = t
    return torch.stack([hidden[first[w]] for w in range(len(words))])


def test_typing_prototypes_match_a_plain_computation(learner):
    tagger = learner.adapt(WORDS, TAGS)
    a = _word_states(learner, WORDS[0])
    paris = _word_states(learner, ["Paris"])  # the window entity_windows must cut
    c = _word_states(learner, WORDS[2])
    per = torch.stack([a[0], a[2:4].mean(0), c[0]]).mean(0)
    loc = torch.stack([paris[0], c[2]]).mean(0)
    tau = float(learner.algorithm.extra["typing.log_temperature"].detach().exp())
    protos = torch.stack([per, loc])
    assert tagger.tag_names == ["O", "per", "loc"]
    torch.testing.assert_close(
        tagger.fast[TYPING[0]].double(), 2 * protos / tau, atol=2e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        tagger.fast[TYPING[1]].double(), -protos.pow(2).sum(-1) / tau, atol=2e-4, rtol=1e-5
    )


def test_predict_gives_one_valid_tag_per_word_past_max_length(learner):
    tagger = learner.adapt(WORDS, TAGS)
    sentences = [["Dana", "visited", "Oslo"], ["word"] * 30 + ["Berlin"]]
    tags = tagger.predict(sentences)
    assert [len(t) for t in tags] == [3, 31]
    # Past max_length the sentence is tagged window by window, so "Berlin" gets a real decision.
    for sent in tags:
        for prev, cur in zip(["O", *sent[:-1]], sent, strict=True):
            assert cur == "O" or cur[:2] in ("B-", "I-")
            assert not cur.startswith("I-") or prev[2:] == cur[2:]


def test_detected_spans_are_typed_from_the_support(learner):
    """Fit the detector to the support itself: the decoded spans then are the gold mentions."""
    algo = learner.algorithm
    tagger = learner.adapt(WORDS[::2], TAGS[::2], steps=100)
    assert tagger.predict(WORDS[::2]) == TAGS[::2]
    # An O threshold of 1 drops every typed span.
    algo.config.o_handling, algo.config.o_threshold = "threshold", 1.0
    try:
        assert all(set(t) == {"O"} for t in tagger.predict(WORDS[::2]))
        algo.config.o_handling = "prototypes"
        fast = learner.adapt(WORDS[::2], TAGS[::2], steps=5).fast
        # Two O words ("met", "left") give two of the four O prototypes asked for.
        assert fast["typing.o_prototypes"].shape == (2, learner.model.hidden_size)
    finally:
        algo.config.o_handling = "none"


def test_meta_gradient_reaches_encoder_heads_and_temperature(learner, data_dir):
    from metanlp.corpora import load_corpus
    from metanlp.episodes import EpisodeCollator, NERSampler

    algo = learner.algorithm
    for p in algo.meta_parameters():
        p.grad = None
    sampler = NERSampler(load_corpus("wnut16", data_dir), n_way=2, k_shot=1, mode="relaxed",
                         name="wnut16", seed=3)  # fmt: skip
    episode = EpisodeCollator(learner.tokenizer, max_length=32)(sampler.specs(1)[0], sampler.source)
    metrics = algo.meta_backward(episode)
    assert set(metrics) >= {"query_loss", "detection_loss", "typing_loss", "typing_acc"}
    grads = {n: p.grad for n, p in algo.named_meta_parameters()}
    for name in ("detector.weight", "typing.log_temperature", algo.outer_names[0]):
        assert grads[name] is not None and float(grads[name].abs().sum()) > 0, name
    # Counted from the episodes, not trained: state (in state_dict), not a meta-parameter.
    assert "transitions.counts" not in grads and "transitions.counts" in algo.state_dict()
    assert float(algo.extra["transitions.counts"].sum()) > 0
    for p in algo.meta_parameters():
        p.grad = None


def test_save_load_round_trip_keeps_transitions(learner, tmp_path):
    with torch.no_grad():
        learner.algorithm.extra["transitions.counts"].zero_()  # drop other tests' episodes
    learner.algorithm.count_transitions([tags_to_bio(t) for t in TAGS])
    start, trans = estimate_transitions([tags_to_bio(t) for t in TAGS])
    torch.testing.assert_close(learner.algorithm.transitions(), (start, trans))
    tagger = learner.adapt(WORDS, TAGS)
    sentences = [["Dana", "visited", "Oslo"], ["Bob", "Dylan", "sang"]]
    learner.save_pretrained(tmp_path / "learner")
    loaded = MetaLearner.from_pretrained(tmp_path / "learner", device="cpu")
    assert loaded.config.algorithm == "decomposed"
    torch.testing.assert_close(loaded.algorithm.transitions(), (start, trans))
    assert loaded.adapt(WORDS, TAGS).predict(sentences) == tagger.predict(sentences)


@pytest.mark.parametrize(
    "options,match",
    [({"o_handling": "drop"}, "o_handling"), ({"typing_inner_steps": -1}, "typing_inner_steps"),
     ({"temperature": 0}, "temperature"), ({"o_threshold": 2.0}, "o_threshold"),
     ({"decoding": "crf"}, "decoding"), ({"entity_weight": -1}, "entity_weight"),
     ({"detection_bias": "high"}, "detection_bias")],
    ids=["o-handling", "typing-steps", "temperature", "threshold", "decoding", "entity-weight",
         "detection-bias"],
)  # fmt: skip
def test_config_errors_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        DecomposedConfig(**options)


def test_nnshot_takes_the_tag_of_the_nearest_support_token(learner, data_dir):
    from metanlp.baselines import NearestToken
    from metanlp.corpora import load_corpus
    from metanlp.episodes import EpisodeCollator, NERSampler

    sampler = NERSampler(load_corpus("wnut16", data_dir), n_way=2, k_shot=1, mode="relaxed",
                         name="wnut16", seed=5)  # fmt: skip
    episode = EpisodeCollator(learner.tokenizer, max_length=24)(sampler.specs(1)[0], sampler.source)
    logits = NearestToken(learner.model).query_logits(episode)
    with torch.no_grad():
        s = learner.model.embed(episode.support["input_ids"], episode.support["attention_mask"])
        q = learner.model.embed(episode.query["input_ids"], episode.query["attention_mask"])
    labels = episode.support["labels"]
    support = [
        (s[b, t].double(), int(labels[b, t])) for b, t in (labels != -100).nonzero().tolist()
    ]
    for b, t in (episode.query["labels"] != -100).nonzero().tolist()[:20]:
        x = q[b, t].double()
        nearest = min(support, key=lambda st: float((x - st[0]).pow(2).sum()))
        assert int(logits[b, t].argmax()) == nearest[1]


def test_decoder_scores_per_decoding(learner):
    algo = learner.algorithm
    with torch.no_grad():
        algo.extra["transitions.counts"].zero_()
    algo.count_transitions([[1, 2, 0, 0], [0, 1]])  # tags: O x3, B x2, I x1
    _, _, prior = algo.decoder_scores()  # default "viterbi": scaled likelihoods
    torch.testing.assert_close(prior, torch.tensor([4 / 9, 3 / 9, 2 / 9]).log())
    algo.config.decoding = "constrained"
    try:
        start, trans, prior = algo.decoder_scores()
        assert start.tolist() == [0.0, 0.0, FORBIDDEN] and prior.tolist() == [0.0, 0.0, 0.0]
        assert trans.tolist() == [[0.0, 0.0, FORBIDDEN], [0.0] * 3, [0.0] * 3]
    finally:
        algo.config.decoding = "viterbi"


def test_detection_bias_moves_the_threshold_on_o(learner):
    """A large bias against ``O`` puts every word in a mention; a large bias for it, none."""
    algo = learner.algorithm
    tagger = learner.adapt(WORDS, TAGS)
    sentences = [["Dana", "visited", "Oslo"], ["Bob", "Dylan", "sang"]]
    try:
        algo.config.detection_bias = 1e3
        assert all("O" not in t for t in tagger.predict(sentences))
        algo.config.detection_bias = -1e3
        assert all(set(t) == {"O"} for t in tagger.predict(sentences))
    finally:
        algo.config.detection_bias = 0.0
