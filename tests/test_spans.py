"""Span extraction and decoding of the decomposed NER learner, against hand-worked sentences and a
brute-force search over every tag path."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from metanlp.meta.spans import (
    FORBIDDEN,
    bio_spans,
    estimate_transitions,
    io_spans,
    io_to_bio,
    join_adjacent,
    path_score,
    span_means,
    tags_to_bio,
    uniform_transitions,
    viterbi,
)

# "Ann met Bob Dylan in New York today" with person / location mentions, worked by hand.
SENTENCE = ["Ann", "met", "Bob", "Dylan", "in", "New", "York", "today"]
IOB2 = ["B-per", "O", "B-per", "I-per", "O", "B-loc", "I-loc", "O"]
BIO = [1, 0, 1, 2, 0, 1, 2, 0]

SPAN_CASES = [
    ([0, 0, 0], []),
    ([1, 2, 2], [(0, 3)]),
    ([1, 1, 1], [(0, 1), (1, 2), (2, 3)]),
    ([0, 2, 2, 0, 2], [(1, 3), (4, 5)]),  # I without B opens a mention (argmax decoding)
    (BIO, [(0, 1), (2, 4), (5, 7)]),
]


@pytest.mark.parametrize(
    "tags,spans", SPAN_CASES, ids=["none", "one", "adjacent", "orphan-I", "sentence"]
)
def test_bio_spans_hand_worked(tags, spans):
    assert bio_spans(tags) == spans


@pytest.mark.parametrize(
    "spans,joined",
    [([], []), ([(0, 1), (1, 2), (2, 3)], [(0, 3)]), ([(0, 1), (2, 4), (5, 7)], [(0, 1), (2, 4), (5, 7)]),
     ([(4, 5), (1, 3), (3, 4)], [(1, 5)])],
    ids=["none", "a-run", "apart", "unsorted"],
)  # fmt: skip
def test_touching_spans_are_joined(spans, joined):
    assert join_adjacent(spans) == joined


def test_tag_strings_to_bio():
    assert tags_to_bio(IOB2) == BIO
    # IO (bigbench Polish style): a run of one type is one mention, a change of type a new one.
    assert tags_to_bio(["per", "per", "loc", "O", "loc"]) == [1, 2, 1, 0, 1]
    # IOB1: I- after O or after another type opens a mention.
    assert tags_to_bio(["I-per", "I-per", "I-loc", "B-loc"]) == [1, 2, 1, 1]


def test_io_ids_to_bio_skips_ignored_positions():
    # [CLS] Ann met Bob Dy ##lan [SEP] pad; IO ids: per = 1; continuation sub-tokens are -100.
    labels = torch.tensor([[-100, 1, 0, 1, 1, -100, -100, -100],
                           [-100, 2, -100, 1, 1, 0, 2, -100]])  # fmt: skip
    expected = torch.tensor([[-100, 1, 0, 1, 2, -100, -100, -100],
                             [-100, 1, -100, 1, 2, 0, 1, -100]])  # fmt: skip
    assert torch.equal(io_to_bio(labels), expected)
    assert io_spans([0, 1, 1, 2, 0, 2]) == [(1, 1, 3), (2, 3, 4), (2, 5, 6)]


def test_transitions_hand_counted():
    start, trans = estimate_transitions([BIO, [0, 0, 1]], smoothing=1.0)
    # starts: B once, O once -> (1+1)/4 each; I forbidden.
    assert torch.allclose(start[:2].exp(), torch.tensor([0.5, 0.5]))
    assert float(start[2]) == FORBIDDEN
    # from O: O->O 1, O->B 3, O->I impossible -> (1+1)/(2+4+0)= 1/3, 4/6
    assert torch.allclose(trans[0, :2].exp(), torch.tensor([2 / 6, 4 / 6]))
    assert float(trans[0, 2]) == FORBIDDEN
    # from B: B->O 1, B->B 0, B->I 2 -> 2/6, 1/6, 3/6
    assert torch.allclose(trans[1].exp(), torch.tensor([2 / 6, 1 / 6, 3 / 6]))
    # from I: I->O 2 -> 3/5, 1/5, 1/5
    assert torch.allclose(trans[2].exp(), torch.tensor([3 / 5, 1 / 5, 1 / 5]))


def _brute_force(emissions, start, trans):
    best, best_path = -math.inf, None
    for path in itertools.product(range(emissions.shape[1]), repeat=emissions.shape[0]):
        score = path_score(path, emissions, start, trans)
        if score > best + 1e-12:
            best, best_path = score, list(path)
    return best, best_path


@pytest.mark.parametrize("length", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("scores", ["random", "estimated", "uniform"])
def test_viterbi_matches_brute_force(length, scores):
    g = torch.Generator().manual_seed(length * 7 + len(scores))
    for _ in range(20):
        emissions = torch.randn(length, 3, generator=g, dtype=torch.float64)
        if scores == "random":
            start = torch.randn(3, generator=g, dtype=torch.float64)
            trans = torch.randn(3, 3, generator=g, dtype=torch.float64)
        elif scores == "estimated":
            start, trans = estimate_transitions([BIO, [0, 1, 2, 2, 0], [1, 1, 0]])
        else:
            start, trans = uniform_transitions()
        best, path = _brute_force(emissions, start, trans)
        found = viterbi(emissions, start, trans)
        assert path_score(found, emissions, start, trans) == pytest.approx(best, abs=1e-9)
        assert found == path
        if scores != "random":  # the scheme holds: no I after O, none first
            assert found[0] != 2 and all(
                not (a == 0 and b == 2) for a, b in zip(found[:-1], found[1:], strict=True)
            )


def test_viterbi_fixes_an_orphan_i_on_a_hand_worked_sentence():
    # The detector's argmax says "Bob"=O, "Dylan"=I: an I without B. Viterbi must choose the
    # best legal path. Uniform moves: start O/B 1/2; from O: O/B 1/2; from B: O/B/I 1/3. So
    # B I = .5*.45 * (1/3)*.6 = .045 beats O B = .5*.5 * .5*.3 = .0375 and O O = .0125.
    probs = torch.tensor([[0.5, 0.45, 0.05], [0.1, 0.3, 0.6]])
    start, trans = uniform_transitions()
    assert probs.argmax(-1).tolist() == [0, 2]
    assert viterbi(probs.log(), start, trans) == [1, 2]


def test_span_means_against_plain_loop():
    feats = torch.randn(8, 5, dtype=torch.float64)
    spans = bio_spans(BIO)
    expected = torch.stack([sum(feats[t] for t in range(a, b)) / (b - a) for a, b in spans])
    assert torch.allclose(span_means(feats, spans), expected)
    assert span_means(feats, []).shape == (0, 5)
