"""Decomposed few-shot NER (Ma et al., ACL 2022): type-agnostic span detection, then span typing.

Stage 1, detection: a linear B/I/O head over the encoder's word states tags "any entity"; it is
meta-learned with MAML (the head adapts in ``inner_steps`` steps on the support's B/I/O tags,
second order unless ``first_order``; the encoder subset ``params`` and the head's start are
meta-learned on the query). At prediction the B/I/O log probabilities are decoded by a Viterbi
pass over transition scores estimated from training corpora (StructShot; meta-training counts the
B/I/O moves of every episode's sentences, `count_transitions` adds a whole corpus), so no ``I``
follows ``O``.

Stage 2, typing: a span is the mean of its words' states; class ``n``'s prototype ``c_n`` is the
mean of the support spans of type ``n``; logits ``−‖s − c_n‖² / τ`` with a learned temperature
τ, written as a linear head ``W_n = 2c_n/τ, b_n = −‖c_n‖²/τ`` (Proto-MAML) that then takes
``typing_inner_steps`` steps on the support spans. Meta-training scores gold query spans.

With ``typing="finetune"`` stage 2 is instead a typer fine-tuned on the support's gold spans
(`metanlp.meta.span_typer`): the head starts from the adapted prototype head, then
``typing_finetune`` AdamW steps move it and an encoder subset; ``typing_none_class`` adds a
"not an entity of these types" class learnt from the detector's false spans on the support.
With ``typing="names"`` each span is typed by the *names* of the types (`metanlp.meta.name_typer`):
its text's embedding under the pretrained encoder (copies of the meta-learned tensors taken before
meta-training, ``pretrained.*`` extras) against the names' embeddings, nudged by the support spans.

``O`` handling at typing (spans the detector invents): ``"none"`` types every detected span,
``"threshold"`` drops a span whose top type probability is below ``o_threshold``,
``"prototypes"`` adds ``o_prototypes`` prototypes of the support's ``O`` words (k-means) and drops
spans nearest to one of them.

The algorithm speaks the episode's IO tag ids like every other: `adapt` takes IO labels and
`predict_logits` returns ``(B, T, n_way)`` scores whose argmax is the decoded tag of each word.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metanlp.meta import name_typer as NT
from metanlp.meta import spans as S
from metanlp.meta.base import MetaAlgorithm, MetaConfig, model_mode
from metanlp.meta.efficient import layered_hidden
from metanlp.meta.finetune import FineTuneConfig
from metanlp.meta.inner import inner_loop
from metanlp.meta.params import select_parameters
from metanlp.meta.registry import register_algorithm
from metanlp.meta.span_typer import (
    finetune_typer,
    gold_word_spans,
    non_gold,
    span_reps,
    typer_config,
)
from metanlp.models import HEAD_PARAMETER_NAMES, model_inputs

O_HANDLING = ("none", "threshold", "prototypes")
TYPINGS = ("prototypes", "finetune", "names")
DECODINGS = ("viterbi", "viterbi_posterior", "constrained", "argmax")
DETECTOR = ("detector.weight", "detector.bias")
TYPING = ("typing.weight", "typing.bias")
O_KEY = "typing.o_prototypes"
COUNTS = "transitions.counts"
PRETRAINED = "pretrained."
"""Prefix of the extras that copy the meta-learned encoder tensors as they were before
meta-training (the encoder of ``typing="names"``)."""
WORD_STARTS = "word_starts"
"""Optional batch key: ``(B, T)`` bool, True at each word's first sub-token (else from labels)."""


@dataclass
class DecomposedConfig(MetaConfig):
    """`MetaConfig` for the decomposed learner; ``inner_*`` options are the detector's.

    Args:
        typing_inner_steps (`int`, defaults to 3): Proto-MAML steps of the typing head.
        typing_inner_lr (`float`, defaults to 0.1): Their rate.
        temperature (`float`, defaults to 10.0): Initial τ of the typing distances (learned).
        detection_weight (`float`, defaults to 1.0): Weight of the detection loss in the outer loss.
        entity_weight (`float`, defaults to 5.0): Class weight of ``B`` and ``I`` in the detection
            cross-entropy (inner and outer); tweets are ~90 % ``O`` words, and an unweighted
            detector learns to say ``O`` everywhere (0 entity F1 on WNUT-16, see the benchmark).
        decoding (`str`, defaults to ``"viterbi"``): ``"viterbi"``: estimated transitions over
            scaled likelihoods (the detector's log posteriors minus the log tag frequencies of
            the counts, as a hybrid HMM; posteriors alone count the ``O`` prior twice);
            ``"viterbi_posterior"``: estimated transitions over the log posteriors (StructShot's
            plain pass); ``"constrained"``: the best path with no ``I`` after ``O`` or first,
            other moves free; ``"argmax"``: per word (an ``I`` after ``O`` opens a mention).
        detection_bias (`float`, defaults to 0.0): Subtracted from each word's ``O`` log
            probability before decoding: above 0 the detector finds more (and longer) spans,
            below 0 fewer (a threshold on ``P(O)``; evaluation only).
        o_handling (`str`, defaults to ``"none"``): ``"none"``, ``"threshold"`` or ``"prototypes"``.
        o_threshold (`float`, defaults to 0.5): Minimum top type probability (``"threshold"``).
        o_prototypes (`int`, defaults to 4): ``O`` prototypes (``"prototypes"``).
        typing (`str`, defaults to ``"prototypes"``): Stage 2 at evaluation: ``"prototypes"``
            (the Proto-MAML head over the meta-learned encoder's span states) or ``"finetune"``
            (a typer fine-tuned on the support's gold spans, `metanlp.meta.span_typer`)
            or ``"names"`` (the span's text against the types' names in the pretrained encoder's
            sentence space, `metanlp.meta.name_typer`; the learner passes the names).
            Meta-training always trains the prototype typing.
        typing_finetune (`dict`, *optional*): `FineTuneConfig` fields of the fine-tuned typer
            over `metanlp.meta.span_typer.TYPER_DEFAULTS` (an int: its steps); stored as the full
            dict. Only with ``typing="finetune"``.
        typing_none_class (`bool`, defaults to False): Give the fine-tuned typer a "none" class
            from the spans the adapted detector finds in the support that are not gold
            mentions; query spans typed "none" are dropped. Only with ``typing="finetune"``.
        names_support_weight (`float`, defaults to 0.25): ``typing="names"``: each support span's
            embedding is added to its type's name embedding with this weight (0: names only).
        type_descriptions (`dict`, *optional*): ``typing="names"``: the words to encode for a
            type name (e.g. ``{"sportsteam": "sports team"}``); other names are split at ``-``,
            ``_`` and camelCase.
        join_adjacent (`bool`, defaults to False): Merge decoded spans that touch (``B B`` over
            one name) into one before typing, so the name is typed once, whole; in IO tags two
            touching mentions of one type read as one anyway.

    Example:
        ```python
        >>> DecomposedConfig(params="top", top_layers=2, inner_steps=5, inner_lr=0.1)
        >>> DecomposedConfig(typing="finetune", typing_finetune={"steps": 20}, typing_none_class=True)
        ```
    """

    min_inner_steps: ClassVar[int] = 0

    inner_steps: int = 5
    inner_lr: float = 0.1
    params: Any = "top"
    typing_inner_steps: int = 3
    typing_inner_lr: float = 0.1
    temperature: float = 10.0
    detection_weight: float = 1.0
    entity_weight: float = 5.0
    decoding: str = "viterbi"
    detection_bias: float = 0.0
    o_handling: str = "none"
    o_threshold: float = 0.5
    o_prototypes: int = 4
    typing: str = "prototypes"
    typing_finetune: Any = None
    typing_none_class: bool = False
    names_support_weight: float = 0.25
    type_descriptions: dict | None = None
    join_adjacent: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.decoding not in DECODINGS:
            raise ValueError(
                f"DecomposedConfig: decoding={self.decoding!r}; use one of {DECODINGS}."
            )
        if self.o_handling not in O_HANDLING:
            raise ValueError(
                f"DecomposedConfig: o_handling={self.o_handling!r}; use one of {O_HANDLING}."
            )
        if not (isinstance(self.typing_inner_steps, int) and self.typing_inner_steps >= 0):
            raise ValueError(
                f"DecomposedConfig: typing_inner_steps={self.typing_inner_steps!r} must be an int >= 0."
            )
        if isinstance(self.detection_bias, bool) or not isinstance(
            self.detection_bias, int | float
        ):
            raise ValueError(
                f"DecomposedConfig: detection_bias={self.detection_bias!r} must be a number."
            )
        for key in ("typing_inner_lr", "temperature", "entity_weight"):
            if not getattr(self, key) > 0:
                raise ValueError(f"DecomposedConfig: {key}={getattr(self, key)!r} must be > 0.")
        if not 0 <= self.o_threshold <= 1 or self.o_prototypes < 1:
            raise ValueError(
                f"DecomposedConfig: o_threshold={self.o_threshold!r} must lie in [0, 1] and "
                f"o_prototypes={self.o_prototypes!r} be >= 1."
            )  # fmt: skip
        if self.typing not in TYPINGS:
            raise ValueError(f"DecomposedConfig: typing={self.typing!r}; use one of {TYPINGS}.")
        if not isinstance(self.join_adjacent, bool):
            raise ValueError(
                f"DecomposedConfig: join_adjacent={self.join_adjacent!r} must be a bool."
            )
        if not isinstance(self.typing_none_class, bool):
            raise ValueError(
                f"DecomposedConfig: typing_none_class={self.typing_none_class!r} must be a bool."
            )
        if not (
            isinstance(self.names_support_weight, int | float)
            and not isinstance(self.names_support_weight, bool)
            and self.names_support_weight >= 0
        ):
            raise ValueError(
                f"DecomposedConfig: names_support_weight={self.names_support_weight!r} must be "
                "a number >= 0."
            )
        if self.type_descriptions is not None and not (
            isinstance(self.type_descriptions, Mapping)
            and all(isinstance(v, str) and v.strip() for v in self.type_descriptions.values())
        ):
            raise ValueError(
                f"DecomposedConfig: type_descriptions={self.type_descriptions!r} must map type "
                "names to non-empty strings, e.g. {'sportsteam': 'sports team'}."
            )
        if self.typing != "prototypes" and self.o_handling == "prototypes":
            raise ValueError(
                "DecomposedConfig: o_handling='prototypes' compares span states of the "
                f"meta-learned encoder, but typing={self.typing!r} types with another; "
                "use o_handling='none' or 'threshold'."
            )
        if self.typing == "finetune":
            self.typing_finetune = typer_config(self.typing_finetune).to_dict()
        elif self.typing_finetune is not None or self.typing_none_class:
            raise ValueError(
                f"DecomposedConfig: typing_finetune={self.typing_finetune!r} / typing_none_class="
                f"{self.typing_none_class!r} configure the fine-tuned typer; set "
                "typing='finetune' to use them (or leave them at None / False)."
            )


class DecomposedNER(MetaAlgorithm):
    """Span detector (MAML) + span typing (Proto-MAML with a learned temperature) for NER.

    Example:
        ```python
        >>> algo = DecomposedNER(model, DecomposedConfig(params="top", top_layers=2))
        >>> algo.count_transitions(tags_to_bio(tags) for tags in corpus_tag_lists)  # optional
        >>> algo.meta_backward(episode)  # {'query_loss', 'detection_loss', 'typing_loss', ...}
        >>> fast = algo.adapt(episode.support, episode.num_labels)
        >>> algo.predict_logits(fast, episode.query, episode.num_labels).argmax(-1)  # IO tag ids
        ```
    """

    name = "decomposed"
    config_class = DecomposedConfig

    def select_inner_names(self) -> list[str]:
        return []  # the adapted heads are the algorithm's own tensors, not the model's

    def select_outer_names(self) -> list[str]:
        chosen = select_parameters(
            self.model, self.config.params, top_layers=self.config.top_layers
        )
        names = [n for n in chosen if n not in HEAD_PARAMETER_NAMES]
        if self.model.task != "token" or not names:
            raise ValueError(
                f"decomposed: needs a token model (task={self.model.task!r}) and encoder tensors "
                f"to meta-learn (params={self.config.params!r}); use task='token' and 'top', "
                "'all', 'lora' or 'adapter'."
            )
        return names

    def build_extra(self) -> None:
        h = self.model.hidden_size
        weight = torch.randn(3, h, generator=torch.Generator().manual_seed(0)) * 0.02
        tau = torch.tensor(float(self.config.temperature)).log()
        self.extra = {
            "detector.weight": nn.Parameter(weight),
            "detector.bias": nn.Parameter(torch.tensor([2.0, 0.0, 0.0])),  # most words are O
            "typing.log_temperature": nn.Parameter(tau),
            # Counts of B/I/O moves in the training corpora (see `count_transitions`).
            COUNTS: nn.Parameter(torch.zeros(4, 3), requires_grad=False),
        }
        params = dict(self.model.named_parameters())
        for name in self.outer_names:  # the encoder as it is now, before meta-training
            self.extra[PRETRAINED + name] = nn.Parameter(
                params[name].detach().clone(), requires_grad=False
            )

    def optional_extras(self) -> set[str]:
        """The ``pretrained.*`` copies: a learner saved before they existed loads without them
        (``typing="names"`` then refuses to run)."""
        return {k for k in self.extra if k.startswith(PRETRAINED)}

    @property
    def uses_type_names(self) -> bool:
        return self.config.typing == "names"

    def pretrained_weights(self) -> dict[str, Tensor]:
        """The meta-learned encoder tensors as they were before meta-training."""
        weights = {
            k[len(PRETRAINED) :]: v for k, v in self.extra.items() if k.startswith(PRETRAINED)
        }
        if not weights:
            raise ValueError(
                "typing='names' encodes with the pretrained encoder, whose tensors this learner "
                "does not keep (it was saved before they were); meta-train it again, or use "
                "typing='prototypes' or 'finetune'."
            )
        return weights

    def embed_texts(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Unit mean-pooled states of ``input_ids`` / ``attention_mask`` under the pretrained
        encoder (`pretrained_weights`)."""
        if len(batch["input_ids"]) == 0:
            return torch.zeros(0, self.model.hidden_size, device=batch["input_ids"].device)
        with model_mode(self.model, False):
            hidden = layered_hidden(self.model, self.pretrained_weights(), batch)
        return NT.mean_pooled(hidden, batch["attention_mask"])

    def embed_spans(
        self, batch: Mapping[str, Tensor], starts: Tensor, spans: list[list[tuple[int, int]]]
    ) -> Tensor:
        """`embed_texts` of each word span's sub-tokens alone (`name_typer.span_token_batch`)."""
        pieces = NT.span_token_batch(batch["input_ids"], batch["attention_mask"], starts, spans)
        return self.embed_texts(pieces)

    def name_head(self, support: Mapping[str, Tensor], n_types: int) -> dict[str, Tensor]:
        """The typing head of ``typing="names"``: ``NAME_SCALE *`` the unit prototypes
        (`name_typer.name_prototypes`) as weights, zero bias."""
        if NT.NAME_IDS not in support:
            raise ValueError(
                "typing='names' needs the entity type names: MetaLearner.adapt and "
                "query_logits pass them; a support batch of your own needs "
                f"{NT.NAME_IDS!r} and {NT.NAME_MASK!r} from name_typer.encode_type_names."
            )
        names = self.embed_texts(
            {"input_ids": support[NT.NAME_IDS], "attention_mask": support[NT.NAME_MASK]}
        )
        if len(names) != n_types:
            raise ValueError(f"{len(names)} type names for an episode of {n_types} types.")
        spans, types = gold_word_spans(support["labels"])
        reps = self.embed_spans(support, support["labels"] != S.IGNORE_INDEX, spans)
        types_t = torch.tensor(types, dtype=torch.long, device=names.device)
        protos = NT.name_prototypes(names, reps, types_t, float(self.config.names_support_weight))
        return {TYPING[0]: NT.NAME_SCALE * protos, TYPING[1]: protos.new_zeros(n_types)}

    def may_use_second_order(self) -> bool:
        return False  # only the heads are differentiated twice; SDPA attention is fine

    def count_transitions(self, sequences: Iterable[Sequence[int]]) -> None:
        """Add B/I/O sequences (e.g. `metanlp.meta.spans.tags_to_bio` of a corpus) to the counts
        the Viterbi scores are estimated from. Meta-training adds every episode's sentences."""
        with torch.no_grad():
            self.extra[COUNTS] += S.transition_counts(sequences).to(self.extra[COUNTS])

    def decoder_scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """(start, transitions, log prior subtracted from the emissions) for ``decoding``."""
        start, trans = self.transitions()
        prior = torch.zeros(3)
        if self.config.decoding == "constrained":
            start = torch.where(start > S.FORBIDDEN, 0.0, S.FORBIDDEN)
            trans = torch.where(trans > S.FORBIDDEN, 0.0, S.FORBIDDEN)
        elif self.config.decoding == "viterbi":
            counts = self.extra[COUNTS].detach().cpu().double()
            prior = torch.log((counts.sum(0) + 1) / (counts.sum() + 3)).float()
        return start, trans, prior

    def transitions(self) -> tuple[Tensor, Tensor]:
        """Log start ``(3,)`` and transition ``(3, 3)`` scores (add-one estimates of the counts)."""
        return S.transitions_from_counts(self.extra[COUNTS].detach().cpu())

    # ---- pieces ---------------------------------------------------------------------------------
    def detection_loss(self, logits: Tensor, bio: Tensor) -> Tensor:
        """B/I/O cross-entropy with ``B`` and ``I`` weighted by ``entity_weight``."""
        w = float(self.config.entity_weight)
        return F.cross_entropy(logits, bio, weight=logits.new_tensor([1.0, w, w]))

    def features(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.model.embed(**model_inputs(batch))

    def typing_head(self, prototypes: Tensor) -> dict[str, Tensor]:
        tau = self.extra["typing.log_temperature"].exp()
        return {TYPING[0]: 2 * prototypes / tau, TYPING[1]: -prototypes.pow(2).sum(-1) / tau}

    def adapt_heads(
        self,
        feats: Tensor,
        labels: Tensor,
        n_way: int,
        steps: int,
        typing_steps: int,
        mode: str,
        grad_scale: float | None = None,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Inner loops of both heads on a support set; returns (fast heads, word states, B/I/O)."""
        grad_scale = self.inner_grad_scale(grad_scale)
        bio = S.io_to_bio(labels)
        keep = bio != S.IGNORE_INDEX
        det_x, det_y = feats[keep], bio[keep]
        detector = inner_loop(
            lambda f: self.detection_loss(F.linear(det_x, f[DETECTOR[0]], f[DETECTOR[1]]), det_y),
            {n: self.extra[n] for n in DETECTOR},
            steps=steps, lr=float(self.config.inner_lr), mode=mode, optimizer=self.optimizer,
            grad_scale=grad_scale,
        ).fast  # fmt: skip
        reps, types = gold_spans(feats, labels)
        protos = typing_prototypes(reps, types, n_way - 1)
        typing = inner_loop(
            lambda f: F.cross_entropy(F.linear(reps, f[TYPING[0]], f[TYPING[1]]), types),
            self.typing_head(protos),
            steps=typing_steps, lr=float(self.config.typing_inner_lr), mode=mode,
            grad_scale=grad_scale,
        ).fast  # fmt: skip
        return {**detector, **typing}, det_x, det_y

    # ---- training -------------------------------------------------------------------------------
    def meta_backward(
        self, episode: Any, scale: float = 1.0, *, grad_scale: float | None = None
    ) -> dict[str, float]:
        support, query, n_way = self.unpack(episode)
        mode = "first_order" if self.config.first_order else "second_order"
        with model_mode(self.model, self.config.train_dropout):
            fast, _, _ = self.adapt_heads(
                self.features(support), support["labels"], n_way,
                self.config.inner_steps, self.config.typing_inner_steps, mode, grad_scale,
            )  # fmt: skip
            q_feats = self.features(query)
            q_bio = S.io_to_bio(query["labels"])
            keep = q_bio != S.IGNORE_INDEX
            det_logits = F.linear(q_feats[keep], fast[DETECTOR[0]], fast[DETECTOR[1]])
            det_loss = self.detection_loss(det_logits, q_bio[keep])
            reps, types = gold_spans(q_feats, query["labels"])
            type_logits = F.linear(reps, fast[TYPING[0]], fast[TYPING[1]])
            type_loss = F.cross_entropy(type_logits, types)
            loss = self.config.detection_weight * det_loss + type_loss
        params = [p for p in self.meta_parameters() if p.requires_grad]
        torch.autograd.backward(loss * scale, inputs=params)
        self.count_transitions(bio_rows(S.io_to_bio(support["labels"])) + bio_rows(q_bio))
        return {
            "query_loss": float(loss.detach()),
            "detection_loss": float(det_loss.detach()),
            "typing_loss": float(type_loss.detach()),
            "query_acc": float((det_logits.argmax(-1) == q_bio[keep]).float().mean()),
            "typing_acc": float((type_logits.argmax(-1) == types).float().mean()),
        }

    # ---- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def adapt(
        self, support: Mapping[str, Tensor], n_way: int, steps: int | None = None
    ) -> dict[str, Tensor]:
        """Both heads adapted to ``support`` (IO labels), plus ``O`` prototypes when configured
        and the fine-tuned typer's tensors with ``typing="finetune"``."""
        steps = self.eval_steps(steps)
        support = self.to_device(support)
        with model_mode(self.model, False):
            feats = self.features(support)
            fast, det_x, det_y = self.adapt_heads(
                feats, support["labels"], n_way, steps, self.config.typing_inner_steps, "no_graph"
            )
        fast = {k: v.detach() for k, v in fast.items()}
        if self.config.o_handling == "prototypes":
            others = det_x[det_y == S.O]
            fast[O_KEY] = kmeans(others, self.config.o_prototypes) if len(others) else det_x[:1]
        if self.config.typing == "finetune":
            head, config, none = self.typer_start(fast, feats, support)
            fast.update(finetune_typer(self, support, head, config, none, head_names=TYPING))
        elif self.config.typing == "names":
            fast.update(self.name_head(support, n_way - 1))
        return fast

    def typer_start(
        self, fast: Mapping[str, Tensor], feats: Tensor, support: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], FineTuneConfig, list[list[tuple[int, int]]] | None]:
        """The fine-tuned typer's starting head, settings and "none" spans (see `span_typer`).

        The head is the adapted typing head; with ``typing_none_class`` and at least one span
        the adapted detector finds in the support that is not a gold mention, one more row
        ``2c/τ, −‖c‖²/τ`` from those spans' prototype ``c``.
        """
        head = {n: fast[n] for n in TYPING}
        none = None
        if self.config.typing_none_class:
            starts = support["labels"] != S.IGNORE_INDEX
            gold, _ = gold_word_spans(support["labels"])
            none = non_gold(self.detect(fast, feats, starts), gold)
            reps = span_reps(feats, starts, none)
            if len(reps):
                extra = self.typing_head(reps.mean(0, keepdim=True))
                head = {n: torch.cat([head[n], extra[n]]) for n in TYPING}
            else:
                none = None
        return head, FineTuneConfig(**self.config.typing_finetune), none

    def detect(
        self, fast: Mapping[str, Tensor], feats: Tensor, starts: Tensor
    ) -> list[list[tuple[int, int]]]:
        """Decoded ``[start, end)`` word spans of each row (words at the ``starts`` mask)."""
        start, trans, prior = self.decoder_scores()
        found = []
        for r in range(feats.shape[0]):
            words = feats[r, starts[r].nonzero().flatten()]
            if len(words) == 0:
                found.append([])
                continue
            emissions = F.log_softmax(F.linear(words, fast[DETECTOR[0]], fast[DETECTOR[1]]), -1)
            emissions = emissions - emissions.new_tensor([self.config.detection_bias, 0.0, 0.0])
            path = (emissions.argmax(-1).tolist() if self.config.decoding == "argmax"
                    else S.viterbi(emissions.cpu() - prior, start, trans))  # fmt: skip
            spans = S.bio_spans(path)
            found.append(S.join_adjacent(spans) if self.config.join_adjacent else spans)
        return found

    @torch.no_grad()
    def predict_logits(
        self, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
    ) -> Tensor:
        """``(B, T, n_way)`` scores: 0 at each word's decoded IO tag, −20 elsewhere (not calibrated).

        Word starts come from ``batch["word_starts"]``, else from ``labels != -100``, else every
        position between the first and last attended token.
        """
        batch = self.to_device(batch)
        with model_mode(self.model, False):
            feats = self.features(batch)
            starts = word_starts(batch)
            found = self.detect(fast, feats, starts)
            if self.config.typing == "names":
                reps = self.embed_spans(batch, starts, found)
            else:
                if self.config.typing == "finetune" and any(found):
                    feats = layered_hidden(self.model, fast, batch)  # the typer's encoder
                reps = span_reps(feats, starts, found)
        out = torch.full((*feats.shape[:2], n_way), -20.0, device=feats.device)
        out[..., 0] = 0.0
        types = iter(self.type_spans(fast, reps, n_way - 1))
        for r, row in enumerate(found):
            positions = starts[r].nonzero().flatten()
            for a, b in row:
                t = next(types)
                if t > 0:
                    out[r, positions[a:b], 0] = -20.0
                    out[r, positions[a:b], t] = 0.0
        return out

    @torch.no_grad()
    def gold_span_types(
        self, fast: Mapping[str, Tensor], batch: Mapping[str, Tensor], n_way: int
    ) -> tuple[list[int], list[int]]:
        """Typing alone, given the gold spans: (predicted, gold) IO tag ids of every gold
        mention of ``batch`` (IO ``labels``); a dropped span is predicted 0."""
        batch = self.to_device(batch)
        if self.config.typing == "names":
            spans, types = gold_word_spans(batch["labels"])
            reps = self.embed_spans(batch, batch["labels"] != S.IGNORE_INDEX, spans)
            return self.type_spans(fast, reps, n_way - 1), [t + 1 for t in types]
        with model_mode(self.model, False):
            if self.config.typing == "finetune":
                feats = layered_hidden(self.model, fast, batch)
            else:
                feats = self.features(batch)
        reps, types = gold_spans(feats, batch["labels"])
        return self.type_spans(fast, reps, n_way - 1), (types + 1).tolist()

    def type_spans(self, fast: Mapping[str, Tensor], reps: Tensor, n_types: int) -> list[int]:
        """IO tag id per span (1..N), or 0 where the ``O`` handling (or the typer's "none"
        class, any row past the ``n_types`` types) drops it."""
        if len(reps) == 0:
            return []
        logits = F.linear(reps, fast[TYPING[0]], fast[TYPING[1]])
        best = logits.argmax(-1)
        drop = best >= n_types
        if self.config.o_handling == "threshold":
            drop |= logits.double().softmax(-1).max(-1).values < self.config.o_threshold
        elif self.config.o_handling == "prototypes":
            o_logits = F.linear(reps, *self.typing_head(fast[O_KEY]).values())
            drop |= o_logits.max(-1).values > logits.max(-1).values
        return torch.where(drop, 0, best + 1).tolist()


def bio_rows(bio: Tensor) -> list[list[int]]:
    """The labelled B/I/O ids of each row (word-level sequences)."""
    return [[t for t in row if t != S.IGNORE_INDEX] for row in bio.tolist()]


def word_starts(batch: Mapping[str, Tensor]) -> Tensor:
    """``(B, T)`` bool mask of the first sub-token of every word (see `WORD_STARTS`)."""
    if WORD_STARTS in batch:
        return batch[WORD_STARTS].bool()
    if "labels" in batch:
        return batch["labels"] != S.IGNORE_INDEX
    mask = batch["attention_mask"].bool().clone()
    lengths = mask.sum(-1)
    mask[:, 0] = False  # [CLS]; right padding assumed, as the MiniLM tokenizer pads
    mask[torch.arange(len(mask)), (lengths - 1).clamp_min(0)] = False  # [SEP]
    return mask


def gold_spans(feats: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean word states and type indices (0..N-1) of the gold IO mentions of a batch."""
    spans, types = gold_word_spans(labels)
    if not types:
        raise ValueError("The support/query has no tagged mention; every episode type needs one.")
    reps = span_reps(feats, labels != S.IGNORE_INDEX, spans)
    return reps, torch.tensor(types, device=feats.device)


def typing_prototypes(reps: Tensor, types: Tensor, n_types: int) -> Tensor:
    """``(N, H)``: the mean representation of each type's spans (every type needs one)."""
    counts = torch.bincount(types, minlength=n_types)
    if bool((counts == 0).any()) or len(counts) != n_types:
        raise ValueError(
            f"Span counts per type {counts.tolist()} for {n_types} types: every entity type "
            "needs at least one support mention."
        )
    sums = reps.new_zeros(n_types, reps.shape[-1]).index_add(0, types, reps)
    return sums / counts.to(reps.dtype).unsqueeze(-1)


def kmeans(points: Tensor, k: int, iterations: int = 10) -> Tensor:
    """``(min(k, n), H)`` centroids; deterministic farthest-point start from the mean."""
    centres = [points.mean(0)]
    while len(centres) < min(k, len(points)):
        dist = torch.cdist(points, torch.stack(centres)).min(-1).values
        centres.append(points[int(dist.argmax())])
    centres_t = torch.stack(centres)
    for _ in range(iterations):
        assign = torch.cdist(points, centres_t).argmin(-1)
        for j in range(len(centres_t)):
            if bool((assign == j).any()):
                centres_t[j] = points[assign == j].mean(0)
    return centres_t


register_algorithm("decomposed", DecomposedConfig, DecomposedNER)
