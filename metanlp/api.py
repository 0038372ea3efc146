"""The API users meet: load a learner, adapt it to a few labelled examples, predict, save, share.

```python
from metanlp import MetaLearner

learner = MetaLearner.from_pretrained("runs/bbc/learner")      # or a Hub id, or a plain encoder
clf = learner.adapt(texts, labels, steps=10)                   # K examples per new class
clf.predict(["Shares fell sharply"])                           # -> label names
tagger = ner_learner.adapt(token_lists, tag_lists)             # NER: word-level tags
tagger.predict([["Ann", "lives", "in", "Paris"]])
```

Adaptation works on fast weights (copies of the adapted tensors): the meta-learned weights are
never modified, so one learner serves any number of tasks.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from metanlp.episodes.tags import word_start_mask
from metanlp.files import recover_folder
from metanlp.inputs import (
    TextTask,
    check_ner_inputs,
    check_text_inputs,
    encode_ner,
    encode_texts,
)
from metanlp.meta.finetune import FineTuneConfig, finetune_fast_weights
from metanlp.meta.name_typer import with_type_names
from metanlp.meta.policy import AdaptDecision, AdaptPolicy, adapt_with_policy
from metanlp.meta.registry import algorithm_from_spec
from metanlp.models import (
    DEFAULT_MODEL_HUB_ID,
    build_model,
    check_max_length,
    model_inputs,
    resolve_device,
)
from metanlp.names import (
    NameChoice,
    with_resolved_names,
    without_names,
)
from metanlp.predictors import FewShotClassifier, FewShotTagger, support_temperature
from metanlp.serialization import (
    LearnerConfig,
    canonical_base_model,
    is_learner_folder,
    load_learner_parts,
    save_learner,
)

UNTRAINED_DEFAULTS: dict[str, Any] = {
    "algorithm": "protomaml",
    "adapt": "top",
    "adapt_options": {"top_layers": 1},
    "algorithm_config": {"inner_steps": 5, "inner_lr": 1e-3, "first_order": True},
}
"""How a plain encoder adapts when no meta-training has happened: a head initialised from the
support prototypes, then a few SGD steps on the head and the top layer (Proto-MAML's inner
loop); for text classification chosen against simpler and stronger candidates by
`UNTRAINED_POLICY`. Its ``algorithm_config`` is Proto-MAML's: another ``algorithm`` starts from
its own config's defaults (ProtoNet, for one, has no inner loop to take ``inner_steps``)."""

UNTRAINED_POLICY: dict[str, Any] = {"fallback": "frozen-lr"}
"""The adaptation policy of a plain encoder for text classification (`AdaptPolicy` defaults
otherwise): each `adapt` chooses, by cross-validation on the support set, among logistic
regression on the frozen encoder's embeddings, the prototype classifier with no adaptation at
all, Proto-MAML's inner loop, and test-time fine-tuning from there; so what `from_pretrained()`
gives is never the worse of these by more than the support set can tell. Where it cannot tell
(a class with one example) it is the logistic regression itself: the fine-tuning fallback was
validated for the meta-trained general learner only. ``policy=None`` turns it off."""


CARD_HYPERPARAMETERS = (
    "algorithm",
    "algorithm_config",
    "adapt",
    "adapt_options",
    "pooling",
    "max_ways",
    "head_init",
    "max_length",
    "finetune",
    "policy",
)
"""The `LearnerConfig` settings the model card lists under "Hyperparameters"."""


class MetaLearner:
    """A (meta-trained) few-shot learner: an encoder, a head and the algorithm that adapts them.

    Build one with `MetaLearner.from_pretrained` (a saved folder, a Hub id, or a plain encoder)
    or `MetaLearner.from_trainer` after meta-training.

    Args:
        algorithm (`MetaAlgorithm`): The algorithm holding the model (see `metanlp.meta`).
        config (`LearnerConfig`): How to rebuild it; saved as ``metanlp_config.json``.
        results (`list[dict]`, *optional*): Evaluation results shown in the model card.
    """

    def __init__(
        self, algorithm: Any, config: LearnerConfig, results: list[dict[str, Any]] | None = None
    ) -> None:
        self.algorithm, self.config, self.results = algorithm, config, results
        self.eval_steps: int | None = None  # inner steps used by `query_logits` (evaluation)
        self.last_decision: AdaptDecision | None = None  # the policy's choice in `query_logits`
        # Class names in `query_logits` (a learner that reads them): None = the episode's
        # label names, False = none (the same learner without names).
        self.eval_label_names: bool | None = None
        # The fast weights of the last `query_logits` (e.g. to score stages of a NER learner).
        self.last_fast: dict[str, torch.Tensor] | None = None
        self.model.eval()
        check_max_length(self.model.base_encoder, self.tokenizer, config.max_length, "max_length")

    # ---- building ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike | None = None,
        *,
        task: str = "sequence",
        device: str | torch.device | None = None,
        **overrides: Any,
    ) -> MetaLearner:
        """Load a saved learner, or start an un-meta-trained one from a plain encoder.

        Args:
            name_or_path (`str` or `os.PathLike`, *optional*): A folder written by
                `save_pretrained`, a Hub repo holding one, or any encoder (Hub id or folder;
                ``None`` = the packaged MiniLM), which gives a learner without meta-training.
            task (`str`, defaults to ``"sequence"``): For a plain encoder: ``"sequence"`` (text
                classification) or ``"token"`` (NER). A saved learner knows its own task.
            device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
            **overrides: For a plain encoder, `LearnerConfig` fields (``algorithm``, ``adapt``,
                ``algorithm_config``, ``pooling``, ``max_length``, ``finetune``, ``policy``,
                ...); the defaults are `UNTRAINED_DEFAULTS` (its ``algorithm_config`` only for
                its own ``algorithm``; another one starts from that algorithm's defaults), and
                for text classification the adaptation policy `UNTRAINED_POLICY`
                (``policy=None`` turns it off). A saved learner takes only ``finetune``
                (test-time fine-tuning after adaptation, see `metanlp.meta.finetune`) and
                ``policy`` (choosing it per task, see `metanlp.meta.policy`).

        Example:
            ```python
            >>> learner = MetaLearner.from_pretrained()            # MiniLM, no meta-training
            >>> learner = MetaLearner.from_pretrained("runs/bbc/learner")
            ```
        """
        device = resolve_device(device)
        folder = _find_learner_folder(name_or_path)
        if folder is not None:
            fixed = sorted(set(overrides) - {"finetune", "policy"})
            if fixed:
                raise ValueError(
                    f"{name_or_path} is a saved learner; its settings come from its config, so "
                    f"{fixed} cannot be overridden (only the test-time `finetune` and `policy`). "
                    "Load it without them."
                )
            algorithm, config, results = load_learner_parts(folder, device)
            if overrides:
                config = dataclasses.replace(config, **overrides)
            return cls(algorithm, config, results)
        known = {f.name for f in dataclasses.fields(LearnerConfig)} - {"base_model", "task"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(
                f"from_pretrained() got unknown setting(s) {unknown}; a plain encoder takes "
                f"LearnerConfig fields: {sorted(known)}."
            )
        options = {**UNTRAINED_DEFAULTS, **overrides}
        if overrides.get("algorithm", options["algorithm"]) != UNTRAINED_DEFAULTS["algorithm"]:
            options["algorithm_config"] = overrides.get("algorithm_config", {})
        if task == "sequence":
            options.setdefault("policy", UNTRAINED_POLICY)
        config = LearnerConfig(base_model=canonical_base_model(name_or_path), task=task, **options)
        model = build_model(config, name_or_path).to(device)
        return cls(algorithm_from_spec(config, model).to(device), config)

    @classmethod
    def from_trainer(
        cls, trainer: Any, *, datasets: Sequence[str] | None = None, task: str | None = None
    ) -> MetaLearner:
        """Wrap the algorithm of a finished `metanlp.training.MetaTrainer` run.

        The learner config is taken from the trainer config (model, pooling, adapt, algorithm
        and its options, the first training source's N and K and the dataset names).
        """
        tc = trainer.config
        sources = list(tc.data.train)
        first = sources[0] if sources else {}
        model = trainer.algorithm.model
        # The spec is the trainer's; the model's own shape wins where an algorithm was passed in.
        spec = {
            **tc.spec_fields(),
            "task": task or model.task,
            "pooling": model.pooling,
            "max_ways": model.max_ways,
            "head_init": model.head_init,
        }
        config = LearnerConfig(
            **spec,
            base_model=canonical_base_model(tc.model),
            max_length=int(tc.data.max_length),
            meta_trained=True,
            n_way=first.get("n_way"),
            k_shot=first.get("k_shot"),
            datasets=list(datasets)
            if datasets
            else [s["dataset"] for s in sources if "dataset" in s],
            training=training_settings(trainer),
        )
        return cls(trainer.algorithm, config)

    # ---- properties --------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        return self.algorithm.model

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def device(self) -> torch.device:
        return self.algorithm.device

    def to(self, device: str | torch.device) -> MetaLearner:
        self.model.to(device)
        self.algorithm.to(device)
        if self.__dict__.get("_base") is not None:  # the original encoder, once loaded
            self._base.to(device)
        return self

    # ---- adapting ----------------------------------------------------------------------------
    def adapt(
        self,
        inputs: Sequence[str] | Sequence[Sequence[str]],
        labels: Sequence[Any] | Sequence[Sequence[str]],
        *,
        steps: int | None = None,
        entity_types: Sequence[str] | None = None,
        label_names: bool | Mapping[Any, str] | Sequence[Any] | None = None,
        finetune: bool | int | Mapping[str, Any] | FineTuneConfig | None = None,
        policy: bool | Mapping[str, Any] | AdaptPolicy | None = None,
        calibrate: bool = False,
    ) -> FewShotClassifier | FewShotTagger:
        """Adapt to a new task from a few labelled examples; the learner itself is not changed.

        Args:
            inputs: Texts (text classification) or token lists (NER: one list of words per sentence).
            labels: One label per text (any hashable names, K examples per class), or for NER one
                tag list per sentence: ``"O"``, IOB2 (``"B-person"``, ``"I-person"``) or IO
                (``"person"``) tags.
            steps (`int`, *optional*): Inner-loop steps; defaults to the algorithm's evaluation
                steps (ProtoNet has none).
            entity_types (`Sequence[str]`, *optional*): NER only; the allowed entity types, so a
                misspelt tag is an error instead of a new type.
            label_names (*optional*): Text classification with a learner that reads class
                names (``ProtoNetConfig(names=True)``, `metanlp.names`). ``None`` (default): the
                labels themselves, split into words (``card_arrival`` -> "card arrival");
                a dict: label -> description; a list: the classes in order, which may include
                classes without examples (with no examples at all, zero-shot: see
                `zero_shot`); ``False``: names off. Meaningless names (``LABEL_0``, ``1``,
                ``A``, a hash) are not used, and ``decision.names`` says why.
            finetune (*optional*): After the inner loop, fine-tune every weight (or a subset)
                with AdamW on the support set (`metanlp.meta.finetune`): ``True`` (defaults: 10
                steps), a step count, a dict of `FineTuneConfig` fields or a `FineTuneConfig`;
                ``False`` turns it off. Defaults to the learner's ``config.finetune`` (off unless
                set). Slower, and better on tasks unlike the meta-training tasks.
            policy (*optional*): Choose how to adapt by cross-validation on the support set
                (`metanlp.meta.policy.AdaptPolicy`): logistic regression on the frozen
                encoder, no adaptation, the algorithm's adaptation, or fine-tuning from it
                (how many steps, which rate). ``True`` (defaults), a dict of fields or an
                `AdaptPolicy`; ``False`` turns it off. Defaults to the learner's
                ``config.policy`` (set for the general learner and for a plain encoder's text
                classification). An explicit ``finetune`` takes precedence. The result's
                ``decision`` says what was chosen.
            calibrate (`bool`, defaults to ``False``): Text classification: fit the result's
                ``temperature`` (which scales `predict_proba`, never `predict`) on held-out
                support examples by 2-fold cross-validation (2 more adaptations; needs 2
                examples per class). Probabilities are otherwise uncalibrated softmax outputs.

        Returns:
            `FewShotClassifier` (``predict``, ``predict_proba``) or `FewShotTagger` (``predict``);
            its ``decision`` (`AdaptDecision` or `None`) records the policy's choice.

        Example:
            ```python
            >>> clf = learner.adapt(["loved it", "great", "boring", "awful"],
            ...                     ["pos", "pos", "neg", "neg"], steps=5)
            >>> clf.predict(["what a great film"])
            ['pos']
            ```
        """
        if calibrate and self.config.task == "token":
            raise ValueError(
                "calibrate=True cross-validates a text-classification support set; for NER, "
                "calibrate on tagged sentences you did not adapt on: tagger.calibrate(words, tags)."
            )
        if self.config.task == "token":
            check = check_ner_inputs(inputs, labels, entity_types)
            batch, _ = encode_ner(self.tokenizer, inputs, check.tag_ids, self.config.max_length)
            n_labels = len(check.tag_names)
        else:
            check = self._text_task(inputs, labels, label_names)
            batch = self._encode_support(inputs, check.label_ids)
            n_labels = len(check.label_names)
        names = None
        if self.config.task == "token":
            batch = with_type_names(self.algorithm, batch, check.tag_names[1:])
        else:
            batch, names = with_resolved_names(
                self.algorithm, batch, check.label_names, label_names
            )
        if not len(batch["labels"]) and not (names and names.used):
            why = names.reason if names else "this learner does not read class names"
            raise ValueError(
                f"No examples, and the class names cannot be used ({why}); give examples, or "
                "names that describe the classes (label_names={label: 'a few words'})."
            )
        fast, decision, adapted = self._adapt(batch, n_labels, steps, finetune, policy, names)
        if self.config.task == "token":
            result = FewShotTagger(adapted, fast, check.tag_names, check.iob2_output)
        else:
            result = FewShotClassifier(adapted, fast, check.label_names)
            if calibrate:
                result.temperature = support_temperature(
                    self,
                    inputs,
                    check,
                    lambda b, n: self._adapt(b, n, steps, finetune, policy)[::2],
                )
        result.decision = decision
        return result

    def zero_shot(self, label_names: Sequence[Any] | Mapping[Any, str]) -> FewShotClassifier:
        """A classifier from the classes' names alone (no examples).

        Args:
            label_names: The classes (split into words: ``"sci.space"`` -> "sci space"), or a
                dict class -> description; the classes are predicted by these keys.

        Example:
            ```python
            >>> clf = learner.zero_shot(["business", "sport", "politics"])
            >>> clf.predict(["The striker scored twice"])
            ['sport']
            ```
        """
        return self.adapt([], [], label_names=label_names)

    def _text_task(self, texts: Any, labels: Any, label_names: Any) -> Any:
        """`check_text_inputs`, with the classes taken from a list of ``label_names`` when given
        (classes without examples allowed; none at all: zero-shot)."""
        listed = label_names not in (None, True, False) and not isinstance(label_names, str)
        if not listed:
            return check_text_inputs(texts, labels)
        classes = list(label_names)
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ValueError(
                f"label_names={classes!r}: give at least 2 distinct classes (each once)."
            )
        if isinstance(texts, Sequence) and not isinstance(texts, str) and len(texts) == 0:
            if isinstance(labels, str) or not isinstance(labels, Sequence) or len(labels):
                raise ValueError("No texts but labels were given; give one label per text.")
            return TextTask(label_names=classes, label_ids=[])
        check = check_text_inputs(texts, labels)
        if isinstance(label_names, Mapping):
            # A dict adds descriptions; classes it names without examples are zero-shot ones.
            classes = [*check.label_names, *(c for c in classes if c not in check.label_names)]
        unknown = [c for c in check.label_names if c not in classes]
        if unknown:
            raise ValueError(
                f"Labels {unknown[:10]!r} are not in label_names {classes!r}; list every class."
            )
        index = {c: i for i, c in enumerate(classes)}
        ids = [index[check.label_names[i]] for i in check.label_ids]
        return TextTask(label_names=classes, label_ids=ids)

    def _encode_support(self, texts: Sequence[str], label_ids: list[int]) -> dict[str, Any]:
        if texts:
            batch = encode_texts(self.tokenizer, texts, self.config.max_length)
        else:  # zero-shot: no rows
            empty = torch.zeros(0, 1, dtype=torch.long)
            batch = {"input_ids": empty, "attention_mask": empty.clone()}
        batch["labels"] = torch.tensor(label_ids, dtype=torch.long)
        return batch

    def query_logits(self, episode: Any) -> torch.Tensor:
        """Adapt on an episode's support and return its query logits (for `metanlp.evaluation`)."""
        n = int(episode.num_labels)
        support = episode.support
        names = None
        if self.config.task == "token":
            support = with_type_names(self.algorithm, support, episode.label_names)
        else:
            support, names = with_resolved_names(
                self.algorithm, support, episode.label_names, self.eval_label_names
            )
        fast, decision, adapted = self._adapt(support, n, self.eval_steps, None, None, names)
        self.last_decision, self.last_fast = decision, fast
        query = model_inputs(episode.query, self.device)
        word_ids = getattr(episode, "query_word_ids", None)
        if word_ids:  # NER: word starts, for learners that decode over words (never the labels)
            query["word_starts"] = word_start_mask(word_ids, query["input_ids"].shape).to(
                self.device
            )
        return adapted.algorithm.predict_logits(fast, query, n)

    @property
    def finetune(self) -> FineTuneConfig | None:
        """The test-time fine-tuning `adapt` and `query_logits` use by default (``None``: off)."""
        return FineTuneConfig.coerce(self.config.finetune)

    @property
    def policy(self) -> AdaptPolicy | None:
        """The adaptation policy `adapt` and `query_logits` use by default (``None``: off)."""
        return AdaptPolicy.coerce(self.config.policy)

    def _adapt(
        self,
        support: Mapping[str, Any],
        n: int,
        steps: int | None,
        finetune: Any,
        policy: Any,
        names: NameChoice | None = None,
    ) -> tuple[dict[str, torch.Tensor], AdaptDecision | None, MetaLearner]:
        """The algorithm's adaptation, then fine-tuning: as asked (``finetune``), as the
        policy asked for chooses from the support set (which may also choose the frozen
        encoder's linear probe, no adaptation at all, or for a meta-trained learner a candidate
        on its original encoder, `base_learner`), as the config's ``finetune`` says, or as the
        config's policy chooses (in that order). ``names``: how the class names were
        resolved, for a learner that reads them (recorded in the decision). With no examples
        (zero-shot) the names alone make the classifier: no policy, no fine-tuning.

        Returns:
            ``(fast weights, decision, the learner they adapt)``: ``self``, or `base_learner`
            when the policy chose the original encoder."""
        zero_shot = not len(support["labels"])
        if finetune is None and not zero_shot:
            if policy is not None:
                chosen = AdaptPolicy.coerce(policy)
            else:  # a fine-tuning set in the config is the user's choice: it beats the policy
                chosen = self.policy if self.finetune is None else None
            if chosen is not None:
                token = self.config.task == "token"
                base = self.base_learner() if chosen.base and not token else None
                fast, decision = adapt_with_policy(
                    self.algorithm, support, n, chosen, steps=steps, token_task=token,
                    names=names, base=None if base is None else base.algorithm,
                )  # fmt: skip
                return fast, decision, base if decision.encoder == "base" else self
        ft = FineTuneConfig.coerce(finetune) if finetune is not None else self.finetune
        ft = None if zero_shot else ft
        decision = None
        if names is not None:
            reason = "zero-shot: the names alone" if zero_shot else "no policy: as configured"
            if ft is not None and names.used:  # the fine-tuned head starts from zeros
                names = dataclasses.replace(
                    names, used=False, reason="fine-tuning replaces the prototypes"
                )
            decision = AdaptDecision(ft, reason, names=names)
        fast = self.algorithm.adapt(support, n, steps=steps)
        if ft is not None:
            fast = finetune_fast_weights(self.algorithm, without_names(support), n, ft, fast)
        return fast, decision, self

    def base_learner(self) -> MetaLearner | None:
        """The original encoder this learner was meta-trained from, as a plain-encoder learner
        (`from_pretrained` of ``config.base_model`` with this learner's ``max_length``), loaded
        once and kept: the adaptation policy's ``base`` candidates run on it. ``None`` for a
        learner that was not meta-trained (it is its own base), and where the original encoder
        cannot be loaded or has another tokenizer (a warning says why; the policy then
        chooses among the learner's own candidates)."""
        if not self.config.meta_trained:
            return None
        if "_base" not in self.__dict__:
            self._base: MetaLearner | None = None
            try:
                base = MetaLearner.from_pretrained(
                    self.config.base_model, device=self.device, max_length=self.config.max_length
                )
            except (OSError, ValueError) as error:
                warnings.warn(
                    f"The adaptation policy's candidates on the original encoder "
                    f"{self.config.base_model!r} are left out: it cannot be loaded ({error}).",
                    stacklevel=3,
                )
                return None
            if base.tokenizer.get_vocab() != self.tokenizer.get_vocab():
                warnings.warn(
                    f"The original encoder {self.config.base_model!r} has another tokenizer "
                    "than this learner; the policy's candidates on it are left out.",
                    stacklevel=3,
                )
                return None
            self._base = base
        return self._base

    # ---- saving and sharing ------------------------------------------------------------------
    def model_card(
        self, results: Sequence[Mapping[str, Any]] | None = None, repo_id: str | None = None
    ) -> str:
        """The README.md text (`metanlp.hub.model_card`): metadata (license, language, base model,
        datasets, method, N/K, a model-index from the results), the results table, the
        hyperparameters and the library versions."""
        from metanlp.hub import model_card

        settings = self.config.to_dict()
        hyperparameters = {
            key: settings[key] for key in CARD_HYPERPARAMETERS if settings.get(key) is not None
        }

        return model_card(
            base_model=self.config.base_model,
            method=self.config.algorithm,
            task=self.config.task,
            n_way=self.config.n_way,
            k_shot=self.config.k_shot,
            datasets=self.config.datasets,
            results=list(results if results is not None else self.results or []),
            episode_set=_episode_set(results if results is not None else self.results),
            repo_id=repo_id,
            meta_trained=self.config.meta_trained,
            hyperparameters=hyperparameters,
            training=self.config.training,
        )

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        results: Sequence[Mapping[str, Any]] | None = None,
        repo_id: str | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write the learner to a folder that `from_pretrained` loads back exactly.

        The write is atomic (a temporary folder, fsynced, renamed into place; a kill at any point
        leaves the previous learner or the new one). Tensors go to safetensors (LoRA in PEFT
        format), settings to JSON; no pickle.

        Args:
            save_directory (`str` or `os.PathLike`): Target folder: absent, empty, or a learner
                folder (which is replaced).
            results (`Sequence[dict]`, *optional*): Output of `metanlp.evaluation.evaluate`, kept
                in ``results.json`` and shown in the card; defaults to the learner's own.
            repo_id (`str`, *optional*): Used in the card's usage snippet.
            overwrite (`bool`, defaults to ``False``): Also replace a file or a folder that is not
                a learner (everything in it is deleted).

        Raises:
            FileExistsError: `save_directory` is a file or a non-empty folder that is not a
                learner, and ``overwrite`` is False.

        Example:
            ```python
            >>> learner.save_pretrained("runs/bbc/learner")
            PosixPath('runs/bbc/learner')
            ```
        """
        if results is not None:
            self.results = [dict(r) for r in results]
        card = self.model_card(repo_id=repo_id)
        return save_learner(
            save_directory, self.algorithm, self.config, card, self.results, overwrite=overwrite
        )

    def push_to_hub(
        self,
        repo_id: str,
        *,
        private: bool | None = None,
        token: str | None = None,
        commit_message: str = "Upload metanlp learner",
        endpoint: str | None = None,
        results: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Save to a temporary folder and upload it to the Hub (created if needed) in one commit.

        Args:
            repo_id (`str`): ``"user/name"``.
            private (`bool`, *optional*): Make a new repo private.
            token (`str`, *optional*): Defaults to ``HF_TOKEN`` or the saved ``hf auth login``.
            endpoint (`str`, *optional*): Hub URL; defaults to ``HF_ENDPOINT`` / huggingface.co.

        Returns:
            `str`: URL of the commit.
        """
        from metanlp.hub import push_folder

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "learner", results=results, repo_id=repo_id)
            return push_folder(
                folder,
                repo_id,
                private=private,
                token=token,
                commit_message=commit_message,
                endpoint=endpoint,
            )


def training_settings(trainer: Any) -> dict[str, Any]:
    """What a model card lists of a `MetaTrainer` run, in `transformers.TrainingArguments` names
    where one exists."""
    tc, state = trainer.config, trainer.state
    return {
        "learning_rate": tc.optimizer.lr,
        "optimizer": "AdamW",
        "weight_decay": tc.optimizer.weight_decay,
        "adam_betas": list(tc.optimizer.betas),
        "adam_epsilon": tc.optimizer.eps,
        "lr_scheduler_type": tc.optimizer.schedule,
        "warmup_steps": tc.optimizer.warmup_steps,
        "max_grad_norm": tc.optimizer.max_grad_norm,
        "meta_batch_size": tc.meta_batch_size,
        "gradient_accumulation_steps": tc.gradient_accumulation_steps,
        "max_steps": tc.max_steps,
        "steps_run": state.step,
        "metric_for_best": tc.metric_for_best,
        "best_metric": state.best_metric,
        "best_step": state.best_step,
        "mixed_precision": tc.mixed_precision,
        "seed": tc.seed,
    }


def _episode_set(results: Sequence[Mapping[str, Any]] | None) -> str | None:
    names = {r.get("episode_set") for r in results or [] if r.get("episode_set")}
    return names.pop() if len(names) == 1 else None


def _find_learner_folder(name_or_path: str | os.PathLike | None) -> Path | None:
    """A local learner folder, or a Hub repo holding one (downloaded); None for a plain encoder."""
    if name_or_path is None or canonical_base_model(name_or_path) == DEFAULT_MODEL_HUB_ID:
        return None  # the packaged default encoder (`metanlp.models.build_model` loads it)
    path = Path(name_or_path).expanduser()
    recover_folder(path)  # a save killed between its two renames
    if path.exists():
        if is_learner_folder(path):
            return path
        if path.is_dir() and not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is neither a saved learner (no metanlp_config.json) nor an encoder "
                "folder (no config.json). Pass a folder written by save_pretrained() or "
                "`metanlp train` (<output_dir>/learner), an encoder folder, or a Hub id."
            )
        return None
    if looks_local(name_or_path):
        raise FileNotFoundError(missing_folder_message(name_or_path))
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    from metanlp.serialization import CONFIG_NAME, LEARNER_FILE_PATTERNS

    if constants.is_offline_mode() or str(name_or_path).count("/") != 1:
        return None  # treated as an encoder; load_encoder explains what was tried
    try:
        hf_hub_download(str(name_or_path), CONFIG_NAME)
    except (EntryNotFoundError, RepositoryNotFoundError, OSError):
        return None
    return Path(snapshot_download(str(name_or_path), allow_patterns=list(LEARNER_FILE_PATTERNS)))


BUILT_BY = {"outputs/general_learner": "make general", "outputs/demo": "make demo"}
"""Learner folders the project's make targets write, and the target that writes each."""


def looks_local(name_or_path: str | os.PathLike) -> bool:
    """Whether a name is meant as a path on this machine rather than a Hub id: it starts with
    ``./``, ``../``, ``/`` or ``~``, has two or more separators (a Hub id has at most one), or
    its parent folder exists here."""
    text = os.fspath(name_or_path)
    seps = {"/", os.sep}
    if text.startswith(("~", *seps)) or any(
        text.startswith(f".{s}") or text.startswith(f"..{s}") for s in seps
    ):
        return True
    if max(text.count(s) for s in seps) >= 2:
        return True
    parent = Path(text).parent
    return parent != Path(".") and parent.is_dir()


def missing_folder_message(name_or_path: str | os.PathLike) -> str:
    """The error for a local-looking learner path that does not exist: which make target
    builds it, when it is one of the project's own outputs."""
    text, path = os.fspath(name_or_path), Path(name_or_path).expanduser()
    resolved = path if path.is_absolute() else Path.cwd() / path
    where = text if str(resolved) == text else f"{text} ({resolved})"
    message = f"The folder {where} does not exist, so there is no learner to load there. "
    posix = path.as_posix()
    target = next((t for prefix, t in BUILT_BY.items() if prefix in posix), None)
    if target is not None:
        return message + (
            f"`{target}` builds it (run it in the metanlp checkout, then load the path from "
            "there or give the absolute path)."
        )
    return message + (
        "Check the path: a learner is a folder written by save_pretrained() or `metanlp "
        "train` (<output_dir>/learner); pass None for the packaged default encoder, or a Hub id."
    )
