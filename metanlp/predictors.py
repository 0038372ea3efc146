"""What `MetaLearner.adapt` returns: the adapted classifier and tagger, their saving and loading
(the checks and tokenization of user inputs are in `metanlp.inputs`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metanlp.episodes.tags import support_windows, word_start_mask
from metanlp.inputs import (
    TextTask,
    as_text_list,
    check_ner_inputs,
    check_texts,
    check_words,
    encode_ner,
    encode_texts,
)
from metanlp.metrics.functional import to_iob2
from metanlp.models import HEAD_PARAMETER_NAMES, model_inputs, resolve_device

BATCH_SIZE = 32
PREDICTOR_CONFIG_NAME = "metanlp_predictor.json"
FAST_WEIGHTS_NAME = "fast_weights.safetensors"
LEARNER_DIR = "learner"
PREDICTOR_FORMAT = "metanlp-predictor"
PREDICTOR_VERSION = 1
PROGRESS_BAR_BATCHES = 8
"""`predict` on more batches than this shows a progress bar unless told otherwise."""
_RELOAD_FIX = "save the classifier again, or download it again."
_TEMPERATURES = torch.logspace(-2, 2, 801, dtype=torch.float64)  # 0.01 .. 100


TEMPERATURE_PRIOR = 1.0
"""Standard deviation of the log-normal prior on the temperature (centred on T = 1)."""


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, *, prior: float | None = TEMPERATURE_PRIOR
) -> float:
    """The temperature ``T`` that minimises the summed cross-entropy of ``logits / T`` on
    ``labels`` (``-100`` ignored) plus ``(log T)^2 / (2 prior^2)``: temperature scaling (Guo et
    al. 2017, "On Calibration of Modern Neural Networks") with a log-normal prior centred on
    ``T = 1``, so that a few held-out examples, all right, cannot drive ``T`` to an extreme
    (their likelihood alone keeps growing as ``T`` shrinks). ``prior=None``: plain maximum
    likelihood. Searched on a fine log grid over 0.01-100 (bounded and deterministic).
    """
    logits = logits.detach().double().reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1).to(logits.device)
    keep = labels != -100
    logits, labels = logits[keep], labels[keep]
    if len(labels) == 0:
        raise ValueError("No labelled example to calibrate on.")
    nll = torch.stack(
        [
            torch.nn.functional.cross_entropy(logits / t, labels, reduction="sum")
            for t in _TEMPERATURES
        ]
    )
    penalty = 0.0 if prior is None else _TEMPERATURES.log() ** 2 / (2 * prior**2)
    return float(_TEMPERATURES[int(torch.argmin(nll.cpu() + penalty))])


def _progress(total: int, batch_size: int, show: bool | None, unit: str) -> Any:
    from tqdm.auto import tqdm

    batches = -(-total // batch_size)
    show = batches > PROGRESS_BAR_BATCHES if show is None else show
    return tqdm(total=total, desc="predict", unit=f" {unit}", disable=not show)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    return batch_size


def _check_temperature(value: Any, where: str = "temperature") -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{where}={value!r} must be a positive number (or None: no scaling).")
    if not np.isfinite(value):
        raise ValueError(f"{where}={value!r} must be finite.")
    return float(value)


class _AdaptedPredictor:
    """What `FewShotClassifier` and `FewShotTagger` share: the learner and its fast weights,
    a temperature, and saving, loading and pushing (safetensors + JSON, no pickle)."""

    kind: str = ""
    decision: Any = None
    """The adaptation policy's choice (`metanlp.meta.policy.AdaptDecision`), when one ran."""

    def __init__(self, learner: Any, fast: dict[str, torch.Tensor]) -> None:
        self.learner, self.fast = learner, fast
        self.temperature: float | None = None
        """Divides the logits before the softmax of ``predict_proba`` (``None``: 1). Set by
        ``calibrate``, or by ``adapt(..., calibrate=True)``; never changes ``predict``."""

    # ---- what subclasses say about themselves --------------------------------------------------
    @property
    def _labels(self) -> list[Any]:
        raise NotImplementedError

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def _scaled(self, logits: torch.Tensor) -> torch.Tensor:
        t = _check_temperature(self.temperature)
        return logits.double() if t is None else logits.double() / t

    # ---- saving and loading ----------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        overwrite: bool = False,
        repo_id: str | None = None,
    ) -> Path:
        """Write the adapted predictor to a folder that `from_pretrained` loads back exactly.

        The folder holds ``metanlp_predictor.json`` (labels, temperature, the policy's
        decision), ``fast_weights.safetensors`` (the adapted tensors), ``learner/`` (the learner
        they adapt, as `MetaLearner.save_pretrained` writes it: it loads without the original
        learner folder) and a ``README.md`` card. The write is atomic
        (`metanlp.files.write_folder`: a kill at any point leaves the previous folder or the new
        one).

        Args:
            save_directory (`str` or `os.PathLike`): Absent, empty, or a folder written here
                before (which is replaced).
            overwrite (`bool`, defaults to ``False``): Also replace a file or a folder holding
                anything else (everything in it is deleted).
            repo_id (`str`, *optional*): Named in the card's usage snippet.

        Raises:
            FileExistsError: `save_directory` holds something else and ``overwrite`` is False.
            ValueError: a label cannot be written to JSON (use strings, integers or floats).

        Example:
            ```python
            >>> clf = learner.adapt(texts, labels)
            >>> clf.save_pretrained("my-classifier")
            >>> FewShotClassifier.from_pretrained("my-classifier").predict("great flight")
            'positive'
            ```
        """
        from safetensors.torch import save_file

        from metanlp.files import recover_folder, write_folder
        from metanlp.serialization import save_learner

        folder = Path(save_directory)
        recover_folder(folder)
        _check_save_target(folder, overwrite)
        config = {
            "format": PREDICTOR_FORMAT,
            "version": PREDICTOR_VERSION,
            "kind": self.kind,
            "labels": _jsonable_labels(self._labels),
            "temperature": _check_temperature(self.temperature),
            "decision": None if self.decision is None else self.decision.to_dict(),
            **self._extra_config(),
        }
        fast = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.fast.items()}
        learner = self.learner
        card = self._card(learner.config.base_model, repo_id)

        def write(tmp: Path) -> None:
            (tmp / PREDICTOR_CONFIG_NAME).write_text(json.dumps(config, indent=2), "utf-8")
            save_file(fast, str(tmp / FAST_WEIGHTS_NAME))
            save_learner(tmp / LEARNER_DIR, learner.algorithm, learner.config,
                         learner.model_card(), learner.results)  # fmt: skip
            (tmp / "README.md").write_text(card, encoding="utf-8")

        return write_folder(folder, write)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        device: str | torch.device | None = None,
        revision: str | None = None,
        token: str | None = None,
    ) -> Any:
        """Load a predictor written by `save_pretrained` (a folder, or a Hub repo holding one).

        Only JSON and safetensors are read (no pickle, no code from the folder or the Hub:
        `docs/security.md`). Every tensor is checked against the model it goes into.

        Args:
            name_or_path (`str` or `os.PathLike`): The folder, or a Hub id (``"user/name"``).
            device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
            revision (`str`, *optional*), token (`str`, *optional*): For a Hub id.

        Raises:
            FileNotFoundError: nothing to load at ``name_or_path``.
            CorruptFileError: a file is damaged or does not fit; the message names it.
            TypeError: the folder holds the other kind (a tagger for `FewShotClassifier`).
        """
        from metanlp.api import MetaLearner
        from metanlp.files import CorruptFileError, read_json, read_safetensors, recover_folder
        from metanlp.serialization import load_learner_parts

        device = resolve_device(device)
        folder = _find_predictor_folder(name_or_path, revision=revision, token=token)
        recover_folder(folder)
        config_file = folder / PREDICTOR_CONFIG_NAME
        config = read_json(
            config_file, f"is it a folder written by save_pretrained? If so, {_RELOAD_FIX}"
        )
        if (
            not isinstance(config, dict)
            or config.get("format") != PREDICTOR_FORMAT
            or config.get("version") != PREDICTOR_VERSION
        ):
            raise CorruptFileError(
                f"{config_file} is not a version-{PREDICTOR_VERSION} {PREDICTOR_FORMAT} file; "
                f"{_RELOAD_FIX}"
            )
        kind = config.get("kind")
        target = {c.kind: c for c in (FewShotClassifier, FewShotTagger)}.get(kind)
        if target is None:
            raise CorruptFileError(f"{config_file}: kind={kind!r} is not 'classifier' or 'tagger'.")
        if cls is not _AdaptedPredictor and target is not cls:
            raise TypeError(
                f"{folder} holds a saved {kind}; load it with {target.__name__}.from_pretrained."
            )
        algorithm, learner_config, results = load_learner_parts(folder / LEARNER_DIR, device)
        learner = MetaLearner(algorithm, learner_config, results)
        fast_file = folder / FAST_WEIGHTS_NAME
        fast = read_safetensors(fast_file, _RELOAD_FIX, device)
        labels = config.get("labels")
        if not isinstance(labels, list) or len(labels) < 2:
            raise CorruptFileError(f"{config_file}: 'labels' must be a list of at least 2 names.")
        _check_fast_weights(fast, learner.model, len(labels), fast_file)
        try:
            predictor = target._from_config(learner, fast, config)
            predictor.temperature = _check_temperature(config.get("temperature"))
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptFileError(
                f"{config_file}: {type(err).__name__}: {err}; {_RELOAD_FIX}"
            ) from None
        predictor.decision = _decision_from_dict(config.get("decision"))
        return predictor

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str | None = None,
        endpoint: str | None = None,
    ) -> str:
        """`save_pretrained` to a temporary folder, then upload it to the Hub in one commit
        (the repo is created if needed); `from_pretrained(repo_id)` loads it back.

        Returns:
            `str`: URL of the commit.
        """
        from metanlp.hub import push_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / self.kind, repo_id=repo_id)
            return push_folder(folder, repo_id, private=private, token=token, endpoint=endpoint,
                               commit_message=commit_message or f"Upload metanlp {self.kind}")  # fmt: skip

    def _card(self, base_model: str, repo_id: str | None) -> str:
        from huggingface_hub import ModelCard, ModelCardData

        from metanlp.hub import _is_hub_id

        pipeline = "text-classification" if self.kind == "classifier" else "token-classification"
        data = ModelCardData(
            library_name="metanlp",
            pipeline_tag=pipeline,
            tags=["metanlp", "few-shot", pipeline],
            base_model=base_model if _is_hub_id(base_model) else None,
        )
        cls = type(self).__name__
        labels = ", ".join(f"`{x}`" for x in self._labels)
        text = (
            f"---\n{data.to_yaml()}\n---\n\n# metanlp few-shot {self.kind}\n\n"
            f"A metanlp learner adapted to one task with `MetaLearner.adapt`; labels: {labels}.\n\n"
            f"```python\nfrom metanlp import {cls}\n\n"
            f"predictor = {cls}.from_pretrained(\"{repo_id or '<folder>'}\")\n```\n\n"
            "`predict_proba` gives softmax probabilities that are "
            + ("temperature-calibrated (see `metanlp_predictor.json`)." if self.temperature
               else "not calibrated (few-shot models are often over-confident).")
            + "\n\n`learner/` holds the learner it was adapted from.\n"
        )  # fmt: skip
        return ModelCard(text).content


class FewShotClassifier(_AdaptedPredictor):
    """A learner adapted to one text-classification task (from `MetaLearner.adapt`).

    Callable: ``clf(texts)`` is ``clf.predict(texts)``. Saved with `save_pretrained`, loaded
    with `FewShotClassifier.from_pretrained`, shared with `push_to_hub`.

    Attributes:
        classes_ (`list`): Label names; column order of `predict_proba`.
        temperature (`float` or `None`): See `calibrate`; probabilities are uncalibrated
            softmax outputs unless it is set.
    """

    kind = "classifier"

    def __init__(self, learner: Any, fast: dict[str, torch.Tensor], label_names: list[Any]) -> None:
        super().__init__(learner, fast)
        self.classes_ = list(label_names)

    @property
    def _labels(self) -> list[Any]:
        return self.classes_

    @classmethod
    def _from_config(
        cls, learner: Any, fast: dict[str, torch.Tensor], config: dict
    ) -> FewShotClassifier:
        return cls(learner, fast, config["labels"])

    def logits(
        self, texts: Any, *, batch_size: int = BATCH_SIZE, show_progress_bar: bool | None = None
    ) -> torch.Tensor:
        """Raw scores ``(len(texts), n_classes)`` (before temperature and softmax), on CPU."""
        texts, _ = as_text_list(texts)
        texts = check_texts(texts, allow_empty=True)
        batch_size = _check_batch_size(batch_size)
        algo, n = self.learner.algorithm, len(self.classes_)
        out = []
        with _progress(len(texts), batch_size, show_progress_bar, "texts") as bar:
            for start in range(0, len(texts), batch_size):
                chunk = texts[start : start + batch_size]
                batch = encode_texts(
                    self.learner.tokenizer, chunk, self.learner.config.max_length, offset=start
                )
                out.append(
                    algo.predict_logits(self.fast, model_inputs(batch, algo.device), n).cpu()
                )
                bar.update(len(chunk))
        return torch.cat(out) if out else torch.zeros(0, n)  # no texts: no rows

    def predict_proba(
        self, texts: Any, *, batch_size: int = BATCH_SIZE, show_progress_bar: bool | None = None
    ) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), n_classes)``, columns in `classes_` order
        (one string gives shape ``(n_classes,)``).

        They are the softmax of the adapted model's scores, divided by `temperature` when one
        is set (`calibrate`): without it they are **not calibrated**, and a few-shot model is
        usually over-confident (0.99 on a text of none of the classes is common).
        """
        single = isinstance(texts, str)
        logits = self.logits(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        proba = torch.softmax(self._scaled(logits), dim=-1).numpy()
        return proba[0] if single else proba

    def predict(
        self, texts: Any, *, batch_size: int = BATCH_SIZE, show_progress_bar: bool | None = None
    ) -> Any:
        """The most probable label for each text: one label for one string, else a list.

        Args:
            texts: A string, or a list / tuple / 1-D numpy array / pandas Series /
                `datasets.Dataset` column of strings.
            batch_size (`int`, defaults to 32): Texts per forward pass.
            show_progress_bar (`bool`, *optional*): Defaults to a bar when there are more than
                8 batches.

        Example:
            ```python
            >>> clf.predict("the crew was lovely")
            'positive'
            >>> clf(dataset["text"], batch_size=64)
            ['positive', 'negative', ...]
            ```
        """
        single = isinstance(texts, str)
        logits = self.logits(texts, batch_size=batch_size, show_progress_bar=show_progress_bar)
        labels = [self.classes_[i] for i in logits.argmax(-1).tolist()]
        return labels[0] if single else labels

    __call__ = predict

    def calibrate(self, texts: Any, labels: Any) -> float:
        """Fit `temperature` on labelled texts the classifier did not adapt on, and return it.

        One scalar divides the logits (temperature scaling, Guo et al. 2017), chosen to minimise
        the cross-entropy of these examples; `predict` is unchanged. Give held-out examples:
        on the support set itself the adapted model is already fitted and the fit is
        meaningless (``adapt(..., calibrate=True)`` cross-validates the support set instead).
        """
        texts, _ = as_text_list(texts)
        labels, _ = (
            as_text_list(labels, "labels") if not isinstance(labels, str) else ([labels], True)
        )
        texts = check_texts(texts)
        self._check_known(labels, len(texts))
        index = {c: i for i, c in enumerate(self.classes_)}
        target = torch.tensor([index[y] for y in labels])
        self.temperature = fit_temperature(self.logits(texts), target)
        return self.temperature

    def _check_known(self, labels: Sequence[Any], n_texts: int) -> None:
        if len(labels) != n_texts:
            raise ValueError(f"Give one label per text: {n_texts} texts, {len(labels)} labels.")
        known = set(self.classes_)
        unknown = sorted({repr(y) for y in labels if not isinstance(y, Hashable) or y not in known})
        if unknown:
            raise ValueError(
                f"Labels {unknown[:10]} are not classes of this task; it was adapted to "
                f"{self.classes_}. Score texts of those classes, or adapt again with examples of "
                "every class."
            )

    def score(self, texts: Sequence[str], labels: Sequence[Any]) -> float:
        """Accuracy of `predict` on labelled texts (as scikit-learn's ``score``).

        Raises:
            ValueError: lengths differ, or a label is not one of `classes_` (the task was
                adapted to those classes only).
        """
        texts, _ = as_text_list(texts)
        texts = check_texts(texts)
        if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels) != len(texts):
            raise ValueError(f"Give one label per text: {len(texts)} texts, labels={labels!r}.")
        self._check_known(labels, len(texts))
        predicted = self.predict(texts)
        return sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(texts)


class FewShotTagger(_AdaptedPredictor):
    """A learner adapted to one NER task (from `MetaLearner.adapt`); predicts word-level tags.

    Tags come back in the scheme of the support set: IOB2 if it used ``B-``/``I-`` prefixes,
    else IO (bare type names). Callable like `predict`; saved, loaded and pushed like
    `FewShotClassifier`.
    """

    kind = "tagger"

    def __init__(
        self, learner: Any, fast: dict[str, torch.Tensor], tag_names: list[str], iob2: bool
    ) -> None:
        super().__init__(learner, fast)
        self.tag_names, self.iob2 = list(tag_names), iob2

    @property
    def _labels(self) -> list[Any]:
        return self.tag_names

    def _extra_config(self) -> dict[str, Any]:
        return {"iob2": bool(self.iob2)}

    @classmethod
    def _from_config(
        cls, learner: Any, fast: dict[str, torch.Tensor], config: dict
    ) -> FewShotTagger:
        tags = config["labels"]
        if tags[0] != "O" or not all(isinstance(t, str) and t for t in tags):
            raise ValueError(f"tag names must be 'O' then entity types, got {tags[:5]}")
        return cls(learner, fast, tags, bool(config["iob2"]))

    @property
    def entity_types(self) -> list[str]:
        return self.tag_names[1:]

    def word_logits(
        self,
        token_lists: Any,
        *,
        batch_size: int = BATCH_SIZE,
        show_progress_bar: bool | None = None,
    ) -> list[torch.Tensor]:
        """Per sentence, the scores of each word ``(n_words, len(tag_names))`` (IO tags, the
        first sub-token's scores); a word the tokenizer left without a sub-token scores ``O``."""
        sentences, _ = _as_sentences(token_lists)
        batch_size = _check_batch_size(batch_size)
        algo, n = self.learner.algorithm, len(self.tag_names)
        tokenizer, max_length = self.learner.tokenizer, self.learner.config.max_length
        # A sentence longer than max_length is cut into consecutive windows of whole words that
        # fit, so no word loses its sub-tokens to truncation (and its tag to a default O).
        pieces = [
            (s, words[a:b])
            for s, words in enumerate(sentences)
            if len(words)
            for a, b in support_windows(tokenizer, words, [1] * len(words), max_length)
        ]
        per_sentence: list[list[torch.Tensor]] = [[] for _ in sentences]
        with _progress(len(pieces), batch_size, show_progress_bar, "sentences") as bar:
            for start in range(0, len(pieces), batch_size):
                chunk = pieces[start : start + batch_size]
                batch, word_ids = encode_ner(tokenizer, [w for _, w in chunk], None, max_length)
                inputs = model_inputs(batch, algo.device)
                # Word starts, for learners that decode over words (ignored by the others).
                starts = word_start_mask(word_ids, batch["input_ids"].shape)
                inputs["word_starts"] = starts.to(algo.device)
                logits = algo.predict_logits(self.fast, inputs, n).cpu()
                for b, (s, words) in enumerate(chunk):
                    rows = _first_subtoken_rows(logits[b], starts[b], word_ids[b], len(words))
                    per_sentence[s].append(rows)
                bar.update(len(chunk))
        return [torch.cat(rows) if rows else torch.zeros(0, n) for rows in per_sentence]

    def predict_proba(
        self,
        token_lists: Any,
        *,
        batch_size: int = BATCH_SIZE,
        show_progress_bar: bool | None = None,
    ) -> Any:
        """Per sentence, an array ``(n_words, len(tag_names))`` of tag probabilities, columns in
        `tag_names` order (``"O"`` then the entity types; `predict` turns the most probable
        into IOB2 when the support set used it). One sentence (a list of words) gives one
        array. Softmax of the scores, divided by `temperature` when set (`calibrate`):
        otherwise **not calibrated**."""
        _, single = _as_sentences(token_lists)
        logits = self.word_logits(
            token_lists, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        proba = [torch.softmax(self._scaled(x), dim=-1).numpy() for x in logits]
        return proba[0] if single else proba

    def predict(
        self,
        token_lists: Any,
        *,
        batch_size: int = BATCH_SIZE,
        show_progress_bar: bool | None = None,
    ) -> Any:
        """One tag per word for each sentence (an empty list gives an empty list).

        Args:
            token_lists: Sentences as lists of words (a list, a numpy array, a pandas Series or
                a `datasets.Dataset` column of them), or one sentence (a list of words without
                spaces), which gives one list of tags.
            batch_size (`int`, defaults to 32): Sentence windows per forward pass.
            show_progress_bar (`bool`, *optional*): Defaults to a bar beyond 8 batches.
        """
        _, single = _as_sentences(token_lists)
        logits = self.word_logits(
            token_lists, batch_size=batch_size, show_progress_bar=show_progress_bar
        )
        tags: list[list[str]] = []
        for rows in logits:
            io = [self.tag_names[t] for t in rows.argmax(-1).tolist()]
            tags.append(to_iob2(io) if self.iob2 else io)
        return tags[0] if single else tags

    __call__ = predict

    def calibrate(self, token_lists: Any, tag_lists: Any) -> float:
        """Fit `temperature` on tagged sentences the tagger did not adapt on (every word
        counts), and return it; `predict` is unchanged. Tags as in `MetaLearner.adapt`."""
        sentences, single = _as_sentences(token_lists)
        tag_lists = [tag_lists] if single else list(tag_lists)
        check = check_ner_inputs(sentences, tag_lists, self.entity_types)
        index = {t: i for i, t in enumerate(self.tag_names)}
        target = torch.tensor([index[check.tag_names[t]] for tags in check.tag_ids for t in tags])
        logits = torch.cat(self.word_logits(sentences))
        self.temperature = fit_temperature(logits, target)
        return self.temperature


def _as_sentences(token_lists: Any) -> tuple[list[list[str]], bool]:
    """``(sentences, single)``: one sentence (a list of words) or a collection of them."""
    if isinstance(token_lists, str):
        raise ValueError(
            "token_lists must be sentences as lists of words, got one string; split it into "
            "words first, e.g. [text.split()]."
        )
    items, _ = as_text_list(token_lists, "token_lists")
    # A list of words is one sentence; a list of strings with spaces is texts given by mistake.
    single = bool(items) and all(isinstance(w, str) and not _has_space(w) for w in items)
    sentences = [items] if single else items
    out = []
    for i, words in enumerate(sentences):
        if isinstance(words, np.ndarray) or (
            hasattr(words, "tolist") and not isinstance(words, Sequence)
        ):
            words = words.tolist()
        check_words(words, i, allow_empty=True)  # an empty sentence gets no tags
        out.append(list(words))
    return out, single


def _has_space(word: str) -> bool:
    return any(ch.isspace() for ch in word)


def _first_subtoken_rows(
    logits: torch.Tensor, starts: torch.Tensor, word_ids: Sequence[int | None], n_words: int
) -> torch.Tensor:
    """``(n_words, n_tags)``: each word's scores at its first sub-token (``starts``, from
    `word_start_mask`: the positions `word_predictions` reads); a word without one scores
    ``O`` (0 for ``O``, -inf for the types)."""
    rows = torch.full((n_words, logits.shape[-1]), float("-inf"), dtype=logits.dtype)
    rows[:, 0] = 0.0
    for position in starts.nonzero().flatten().tolist():
        if word_ids[position] < n_words:
            rows[word_ids[position]] = logits[position]
    return rows


def support_temperature(learner: Any, texts: Sequence[str], task: TextTask, adapt: Any) -> float:
    """Temperature fitted on held-out support examples: the support set is split into 2
    stratified folds; for each, ``adapt(batch, n)`` (the learner's own adaptation, fine-tuning
    and policy included; it returns the fast weights and the learner whose algorithm they
    adapt) runs on the other fold and the held-out fold is scored. Needs 2 examples of every
    class."""
    from metanlp.meta.policy import stratified_folds

    folds = stratified_folds(task.label_ids, 2)
    if folds is None:
        raise ValueError(
            "calibrate=True fits the temperature on held-out support examples (2-fold "
            "cross-validation), which needs at least 2 examples of every class; give more "
            "examples, or calibrate later on labelled texts: clf.calibrate(texts, labels)."
        )
    n, max_length = len(task.label_names), learner.config.max_length
    logits, labels = [], []
    for held_out in folds:
        keep = sorted(set(range(len(texts))) - set(held_out))
        train = encode_texts(learner.tokenizer, [texts[i] for i in keep], max_length)
        train["labels"] = torch.tensor([task.label_ids[i] for i in keep], dtype=torch.long)
        fast, adapted = adapt(train, n)
        val = encode_texts(learner.tokenizer, [texts[i] for i in held_out], max_length)
        algo = adapted.algorithm
        logits.append(algo.predict_logits(fast, model_inputs(val, algo.device), n).cpu())
        labels += [task.label_ids[i] for i in held_out]
    return fit_temperature(torch.cat(logits), torch.tensor(labels))


def _jsonable_labels(labels: Sequence[Any]) -> list[Any]:
    bad = [
        y
        for y in labels
        if not isinstance(y, (str, int, float)) or (isinstance(y, float) and not np.isfinite(y))
    ]
    if bad:
        raise ValueError(
            f"Labels {bad[:5]!r} cannot be saved: a saved classifier keeps its labels in JSON, "
            "which holds strings, integers, floats and booleans. Adapt with such labels (e.g. "
            "str(label)) to save the classifier."
        )
    return list(labels)


def _decision_from_dict(data: Any) -> Any:
    """The saved `AdaptDecision` rebuilt from its ``to_dict`` (a record of what the policy
    chose; predictions never depend on it). Plain fields pass through by name, so fields added
    later keep working; a nested record that cannot be rebuilt is left out."""
    if not isinstance(data, dict):
        return None
    from dataclasses import fields

    from metanlp.meta.finetune import FineTuneConfig
    from metanlp.meta.policy import AdaptDecision

    known = {f.name for f in fields(AdaptDecision)}
    kwargs = {
        k: v
        for k, v in data.items()
        if k in known
        and k != "finetune"
        and (k in ("scores", "best") or not isinstance(v, (dict, list)))
    }
    ft = data.get("finetune")
    try:
        return AdaptDecision(finetune=None if ft is None else FineTuneConfig(**ft), **kwargs)
    except (TypeError, ValueError):  # written by another version: the record is optional
        return None


def _check_fast_weights(
    fast: Mapping[str, torch.Tensor], model: Any, n_labels: int, path: Path
) -> None:
    """The adapted tensors fit the learner's model: a parameter keeps its shape (a head may have
    any number of rows from ``n_labels`` up, over the encoder's hidden size); no NaN or inf."""
    from metanlp.files import CorruptFileError

    params = dict(model.named_parameters())
    for name, tensor in fast.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CorruptFileError(
                f"{path}: tensor {name!r} holds NaN or infinite values; {_RELOAD_FIX}"
            )
        if name not in params:
            continue  # algorithm state (e.g. prototypes), read by its own predict_logits
        want, shape = tuple(params[name].shape), tuple(tensor.shape)
        if name in HEAD_PARAMETER_NAMES:
            fits = len(shape) == len(want) and shape[1:] == want[1:] and shape[0] >= n_labels
        else:
            fits = shape == want
        if not fits:
            raise CorruptFileError(
                f"{path}: tensor {name!r} has shape {shape} but the learner's model needs {want}"
                f"{' (any number of rows >= the labels)' if name in HEAD_PARAMETER_NAMES else ''}; "
                f"{_RELOAD_FIX}"
            )


PREDICTOR_ENTRIES = (PREDICTOR_CONFIG_NAME, FAST_WEIGHTS_NAME, "README.md", LEARNER_DIR)
"""What `save_pretrained` writes at the top of a predictor folder."""


def _check_save_target(folder: Path, overwrite: bool) -> None:
    """A predictor folder holding only its own entries is replaced; one holding anything else,
    a learner or any other folder is refused unless ``overwrite``
    (`metanlp.serialization.check_save_target`)."""
    from metanlp.serialization import check_save_target

    if (
        not overwrite
        and folder.is_dir()
        and not folder.is_symlink()
        and is_predictor_folder(folder)
    ):
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in PREDICTOR_ENTRIES)
        if foreign:
            raise FileExistsError(
                f"{folder} holds a saved predictor and {len(foreign)} other entries (e.g. "
                f"{foreign[:3]}); saving there would delete them. Move them out, save "
                "elsewhere, or pass overwrite=True to replace the whole folder."
            )
    check_save_target(
        folder, overwrite, ours=is_predictor_folder, what="saved classifier or tagger"
    )


def is_predictor_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written by `FewShotClassifier/FewShotTagger.save_pretrained`."""
    return (Path(path) / PREDICTOR_CONFIG_NAME).is_file()


PREDICTOR_FILE_PATTERNS = (PREDICTOR_CONFIG_NAME, FAST_WEIGHTS_NAME, "README.md")


def _find_predictor_folder(
    name_or_path: str | os.PathLike, *, revision: str | None, token: str | None
) -> Path:
    path = Path(name_or_path).expanduser()
    if os.path.lexists(path) or str(name_or_path).count("/") != 1:
        if not is_predictor_folder(path):
            raise FileNotFoundError(
                f"{path} is not a saved classifier or tagger (no {PREDICTOR_CONFIG_NAME}); pass a "
                "folder written by FewShotClassifier/FewShotTagger.save_pretrained or a Hub id."
            )
        return path
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    from metanlp.serialization import LEARNER_FILE_PATTERNS

    try:
        hf_hub_download(str(name_or_path), PREDICTOR_CONFIG_NAME, revision=revision, token=token)
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        raise FileNotFoundError(
            f"{name_or_path} is neither a local folder nor a Hub repo holding a saved classifier "
            f"or tagger ({type(err).__name__}); check the path or repo id."
        ) from None
    patterns = [*PREDICTOR_FILE_PATTERNS, *(f"{LEARNER_DIR}/{p}" for p in LEARNER_FILE_PATTERNS)]
    return Path(snapshot_download(str(name_or_path), revision=revision, token=token,
                                  allow_patterns=patterns))  # fmt: skip
