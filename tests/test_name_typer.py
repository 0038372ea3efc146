"""Typing spans by the types' names (`metanlp.meta.name_typer`, ``typing="names"``): spans are
cut from the batch as the tokenizer cuts their text alone, embedded by the *pretrained* encoder
(checked against the pretrained MiniLM loaded on its own, after the learner's meta-learned
tensors moved), prototypes mix names and support spans as stated, and the copies of the
pretrained tensors are saved, never trained, and optional on load."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModel

from metanlp.api import MetaLearner
from metanlp.inputs import check_ner_inputs, encode_ner
from metanlp.meta import name_typer as NT
from metanlp.meta.decomposed import PRETRAINED, TYPING, DecomposedConfig
from metanlp.meta.efficient import layered_hidden
from metanlp.models import default_model_path

WORDS = [["Ann", "met", "Bob", "Dylan", "today"], ["Carl", "left", "Reykjavik"]]
TAGS = [["B-per", "O", "B-per", "I-per", "O"], ["B-per", "O", "B-loc"]]
QUERY = [["Dana", "visited", "Oslo"], ["Bob", "Dylan", "sang", "in", "Paris"]]
QUERY_TAGS = [["B-per", "O", "B-loc"], ["B-per", "I-per", "O", "O", "B-loc"]]
DESCRIPTIONS = {"per": "person", "loc": "city"}


@pytest.fixture(scope="module")
def learner(single_thread):
    """A learner whose meta-learned tensors (its top layer) moved away from the pretrained ones,
    as meta-training moves them."""
    torch.manual_seed(0)
    out = MetaLearner.from_pretrained(
        task="token", algorithm="decomposed", adapt="top", adapt_options={"top_layers": 1},
        algorithm_config={"inner_steps": 2, "typing": "names", "type_descriptions": DESCRIPTIONS},
        max_length=32, device="cpu",
    )  # fmt: skip
    params = dict(out.model.named_parameters())
    with torch.no_grad():
        for name in out.algorithm.outer_names:
            params[name].add_(0.05 * torch.randn_like(params[name]))
    out.config.meta_trained = True  # so that saving keeps the moved tensors
    return out


@pytest.fixture(scope="module")
def reference():
    """The pretrained MiniLM on its own and its sentence embedding (mean pooling, unit length)."""
    model = AutoModel.from_pretrained(default_model_path()).eval()

    def embed(tokenizer, texts):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)

    return embed


def with_options(learner, **options):
    out = copy.copy(learner)
    out.algorithm = copy.copy(learner.algorithm)
    out.algorithm.config = dataclasses.replace(learner.algorithm.config, **options)
    return out


def encoded(learner, words, tags):
    check = check_ner_inputs(words, tags, None)
    batch, _ = encode_ner(learner.tokenizer, words, check.tag_ids, 32)
    return batch, check


@pytest.mark.parametrize(
    ("name", "descriptions", "words"),
    [("sportsteam", {"sportsteam": "sports team"}, "sports team"), ("geo-loc", None, "geo loc"),
     ("musicArtist", None, "music Artist"), ("tv_show", {}, "tv show"), ("movie", None, "movie")],
)  # fmt: skip
def test_type_names_are_spelt_out(name, descriptions, words):
    assert NT.describe_type(name, descriptions) == words


def test_spans_are_cut_as_the_tokenizer_cuts_their_text_alone(learner):
    words = [["I", "saw", "Reykjavik", "skyscrapers"], ["Ann", "loves", "Reykjavik"], ["no"]]
    tags = [["O", "O", "B-loc", "I-loc"], ["B-per", "O", "B-loc"], ["O"]]
    batch, _ = encoded(learner, words, tags)
    starts = batch["labels"] != -100
    spans = [[(2, 4), (0, 1)], [(2, 3), (0, 2)], []]  # row ends, sub-word pieces, empty rows
    got = NT.span_token_batch(batch["input_ids"], batch["attention_mask"], starts, spans)
    texts = ["Reykjavik skyscrapers", "I", "Reykjavik", "Ann loves"]
    want = learner.tokenizer(texts, padding=True, return_tensors="pt")
    assert torch.equal(got["attention_mask"], want["attention_mask"])
    assert torch.equal(got["input_ids"] * got["attention_mask"], want["input_ids"])
    assert len(learner.tokenizer.tokenize("Reykjavik skyscrapers")) > 2  # pieces were joined


def test_a_span_cut_by_the_window_ends_at_the_rows_sep(learner):
    words = [["a"] * 40 + ["Reykjavik"]]
    batch, _ = encoded(learner, words, [["O"] * 40 + ["B-loc"]])  # max_length 32: cut
    starts = batch["labels"] != -100
    n = int(starts[0].sum())  # words in the first window
    got = NT.span_token_batch(
        batch["input_ids"][:1], batch["attention_mask"][:1], starts[:1], [[(n - 2, n)]]
    )
    want = learner.tokenizer(["a a"], return_tensors="pt")["input_ids"]
    assert torch.equal(got["input_ids"], want)


def test_prototypes_are_the_normalised_name_plus_weighted_span_sums():
    g = torch.Generator().manual_seed(0)
    names, spans = torch.randn(3, 8, generator=g), torch.randn(5, 8, generator=g)
    types = torch.tensor([0, 2, 2, 1, 0])
    got = NT.name_prototypes(names, spans, types, 0.5)
    for t in range(3):
        want = names[t] + 0.5 * sum(spans[i] for i in range(5) if types[i] == t)
        torch.testing.assert_close(got[t], want / want.norm())
    torch.testing.assert_close(NT.name_prototypes(names, spans, types, 0.0), F.normalize(names))


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_names_typing_matches_the_pretrained_models_sentence_embeddings(learner, reference, weight):
    tagger = with_options(learner, names_support_weight=weight).adapt(WORDS, TAGS)
    tok = learner.tokenizer
    names = reference(tok, ["person", "city"])  # the descriptions of per, loc
    spans = reference(tok, ["Ann", "Bob Dylan", "Carl", "Reykjavik"])
    protos = F.normalize(names + weight * torch.stack([spans[:3].sum(0), spans[3]]), dim=-1)
    torch.testing.assert_close(tagger.fast[TYPING[0]], NT.NAME_SCALE * protos, atol=1e-4, rtol=0)
    assert not tagger.fast[TYPING[1]].any()
    # Typing alone, on the query's gold spans: the reference's most similar prototype.
    algo = tagger.learner.algorithm
    batch, check = encoded(learner, QUERY, QUERY_TAGS)
    assert check.tag_names == ["O", "per", "loc"]
    predicted, gold = algo.gold_span_types(tagger.fast, batch, 3)
    query = reference(tok, ["Dana", "Oslo", "Bob Dylan", "Paris"])
    assert gold == [1, 2, 1, 2]
    assert predicted == ((query @ protos.T).argmax(-1) + 1).tolist()
    # The current (moved) encoder embeds differently: the copies are what is used.
    oslo = tok(["Oslo"], return_tensors="pt")
    current = NT.mean_pooled(layered_hidden(learner.model, {}, oslo), oslo["attention_mask"])
    assert (current - query[1]).abs().max() > 1e-2


def test_the_learner_passes_names_and_the_predictions_are_tags(learner):
    tagger = learner.adapt(WORDS, TAGS)
    tags = tagger.predict(QUERY)
    assert [len(t) for t in tags] == [len(q) for q in QUERY]
    assert set(sum(tags, [])) <= {"O", "B-per", "I-per", "B-loc", "I-loc"}


def test_a_support_batch_without_names_is_refused(learner):
    batch, _ = encoded(learner, WORDS, TAGS)
    with pytest.raises(ValueError, match="type_names_input_ids"):
        learner.algorithm.adapt(batch, 3)


def test_meta_training_leaves_the_copies_alone(learner, data_dir):
    from metanlp.corpora import load_corpus
    from metanlp.episodes import EpisodeCollator, NERSampler

    algo = copy.deepcopy(learner.algorithm)
    copies = {k: v.clone() for k, v in algo.extra.items() if k.startswith(PRETRAINED)}
    assert set(copies) == {PRETRAINED + n for n in algo.outer_names}
    assert not any(n.startswith(PRETRAINED) for n, _ in algo.named_meta_parameters())
    sampler = NERSampler(load_corpus("wnut16", data_dir), n_way=2, k_shot=1, mode="relaxed",
                         name="wnut16", seed=3)  # fmt: skip
    episode = EpisodeCollator(learner.tokenizer, max_length=32)(sampler.specs(1)[0], sampler.source)
    algo.meta_backward(episode)
    assert all(algo.extra[k].grad is None and torch.equal(algo.extra[k], v)
               for k, v in copies.items())  # fmt: skip


def test_copies_are_saved_and_a_learner_saved_without_them_still_loads(learner, tmp_path):
    learner.save_pretrained(tmp_path / "new")
    loaded = MetaLearner.from_pretrained(tmp_path / "new", device="cpu")
    assert loaded.algorithm.config.typing == "names"
    assert loaded.adapt(WORDS, TAGS).predict(QUERY) == learner.adapt(WORDS, TAGS).predict(QUERY)
    # An earlier learner: its extras file without the copies.
    files = [p for p in (tmp_path / "new").iterdir() if p.suffix == ".safetensors"]
    for path in files:
        tensors = load_file(path)
        if any(k.startswith(PRETRAINED) for k in tensors):
            save_file({k: v for k, v in tensors.items() if not k.startswith(PRETRAINED)}, path)
    old = MetaLearner.from_pretrained(tmp_path / "new", device="cpu")
    assert not any(k.startswith(PRETRAINED) for k in old.algorithm.extra)
    with pytest.raises(ValueError, match="meta-train it again"):
        old.adapt(WORDS, TAGS)
    protos = with_options(old, typing="prototypes", type_descriptions=None)
    assert len(protos.adapt(WORDS, TAGS).predict(QUERY)) == 2


@pytest.mark.parametrize(
    ("options", "match"),
    [({"typing": "names", "names_support_weight": -1.0}, "names_support_weight"),
     ({"typing": "names", "type_descriptions": {"a": " "}}, "type_descriptions"),
     ({"typing": "names", "o_handling": "prototypes"}, "o_handling"),
     ({"join_adjacent": 1}, "join_adjacent")],
    ids=["negative-weight", "empty-description", "o-prototypes", "join-not-bool"],
)  # fmt: skip
def test_config_errors_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        DecomposedConfig(**options)


def test_joined_detection_types_a_run_of_b_tags_once(learner):
    """A detector that says ``B`` on every word finds one-word spans; joined, each row is one
    span, typed once (every word of it gets that type)."""
    algo = with_options(learner, decoding="argmax", join_adjacent=True).algorithm
    tagger = learner.adapt(WORDS, TAGS)
    h = learner.model.hidden_size
    fast = {**tagger.fast, "detector.weight": torch.zeros(3, h),
            "detector.bias": torch.tensor([0.0, 10.0, 0.0])}  # fmt: skip
    batch, _ = encoded(learner, QUERY, QUERY_TAGS)
    starts = batch["labels"] != -100
    feats = algo.features(batch)
    assert algo.detect(fast, feats, starts) == [[(0, 3)], [(0, 5)]]
    split = with_options(learner, decoding="argmax").algorithm.detect(fast, feats, starts)
    assert split == [[(i, i + 1) for i in range(3)], [(i, i + 1) for i in range(5)]]
    ids = algo.predict_logits(fast, {k: v for k, v in batch.items() if k != "labels"}, 3)
    for r, n in enumerate([3, 5]):
        tags = ids[r][starts[r]].argmax(-1)
        assert len(tags) == n and len(set(tags.tolist())) == 1 and tags[0] > 0
