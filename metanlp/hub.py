"""Model cards and pushing a saved metanlp folder to the Hugging Face Hub.

The card is built with `huggingface_hub.ModelCard` / `ModelCardData`: license and language of
the base model, base model, datasets, a ``model-index`` of `EvalResult` entries from the
learner's recorded results, the hyperparameters, the library versions, and the results table
with 95% confidence intervals. Pushing uses `huggingface_hub.HfApi`: create the repo, then one
commit holding every file of the folder, with the repo id filled into the card.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from metanlp.evaluation import comparison_table

CARD_NAME = "README.md"
REPO_PLACEHOLDER = "<this repo id or folder>"
"""Stands for the repo id in the usage snippet of a card saved before its repo is known;
`card_for_repo` replaces it at push."""
FRAMEWORKS = ("metanlp", "torch", "transformers", "peft", "datasets", "huggingface_hub")
PIPELINES = {"sequence": "text-classification", "token": "token-classification"}


def model_card(
    *,
    base_model: str,
    method: str,
    task: str,
    n_way: int | None = None,
    k_shot: int | None = None,
    datasets: Sequence[str] = (),
    results: Sequence[Mapping[str, Any]] = (),
    episode_set: str | None = None,
    repo_id: str | None = None,
    meta_trained: bool = True,
    hyperparameters: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
) -> str:
    """The text of a model card (README.md) for a learner, built with `huggingface_hub.ModelCard`.

    Args:
        base_model (`str`): Encoder the learner starts from (Hub id or name); a machine path is
            left out of the metadata.
        method (`str`): Meta-learning algorithm, e.g. ``"maml"``, ``"protonet"``.
        task (`str`): ``"sequence"`` (text classification) or ``"token"`` (NER).
        n_way, k_shot (`int`, *optional*): Episode shape used for meta-training.
        datasets (`Sequence[str]`): Datasets used for meta-training (the Hub ids among them go in
            the ``datasets`` field).
        results (`Sequence[Mapping]`): Evaluation results (see `metanlp.evaluation.evaluate`); the
            first method is this learner, whose scores become the ``model-index``; the others
            are shown beside it in the table.
        episode_set (`str`, *optional*): Name of the fixed test episode set behind `results`.
        repo_id (`str`, *optional*): The model's repo; defaults to `REPO_PLACEHOLDER`, filled in
            by `push_folder`.
        meta_trained (`bool`, defaults to True): False for a learner that was never meta-trained.
        hyperparameters (`Mapping`, *optional*): The learner's settings, listed under
            "Hyperparameters".
        training (`Mapping`, *optional*): The meta-training run's settings (learning rate,
            steps, ...), listed under "Meta-training".
        license, language (*optional*): Default to the base model's own card, when it is on
            this machine (the packaged default, a local folder, or the Hugging Face cache).

    Example:
        ```python
        >>> card = model_card(base_model="sentence-transformers/all-MiniLM-L6-v2",
        ...                   method="maml", task="sequence", n_way=5, k_shot=5)
        >>> card.splitlines()[0]
        '---'
        ```
    """
    from huggingface_hub import ModelCard, ModelCardData

    pipeline = PIPELINES[task]
    hub_base = base_model if _is_hub_id(base_model) else None
    base_card = _base_model_card_data(base_model)
    if license is None and base_card is not None:
        license = base_card.license
    if language is None and base_card is not None:
        language = base_card.language
    hub_datasets = [d for d in datasets if _is_hub_id(d)]
    name = repo_id or REPO_PLACEHOLDER
    metanlp_meta: dict[str, Any] = {
        "method": method,
        "task": task,
        "meta_trained": meta_trained,
        "n_way": n_way,
        "k_shot": k_shot,
    }
    if datasets:
        metanlp_meta["meta_training_data"] = list(datasets)
    data = ModelCardData(
        model_name=name,
        base_model=hub_base,
        datasets=hub_datasets or None,
        language=language,
        license=license,
        library_name="metanlp",
        pipeline_tag=pipeline,
        tags=["metanlp", "few-shot", "meta-learning", method],
        metrics=sorted({m for r in results[:1] for m in r.get("summary", {})}) or None,
        eval_results=_eval_results(results[:1], pipeline, episode_set) or None,
        metanlp=metanlp_meta,
    )
    shape = f"{n_way}-way {k_shot}-shot " if n_way and k_shot else ""
    kind = "named-entity recognition" if task == "token" else "text classification"
    source = f"`{hub_base}`" if hub_base else "a local encoder"
    lines = [
        f"# Few-shot {kind} learner ({method})",
        "",
        (
            f"Meta-trained with metanlp ({method}, {shape}episodes) from {source}"
            + (f" on {', '.join(f'`{d}`' for d in datasets)}." if datasets else ".")
            if meta_trained
            else f"{source[0].upper()}{source[1:]} with metanlp's {method} adaptation, without "
            "meta-training."
        ),
        "It adapts to new classes from a handful of labelled examples; its own weights are",
        "never modified by adaptation.",
        "",
        "## Usage",
        "",
        "```python",
        "from metanlp import MetaLearner",
        "",
        f'learner = MetaLearner.from_pretrained("{name}")',
    ]
    if task == "token":
        lines += [
            'clf = learner.adapt([["Paris", "is", "nice"], ["I", "met", "Ann"]],',
            '                    [["location", "O", "O"], ["O", "O", "person"]])',
            'clf.predict([["Ann", "lives", "in", "Paris"]])',
        ]
    else:
        lines += [
            'clf = learner.adapt(["great film", "awful plot"], ["pos", "neg"])',
            'clf.predict(["what a film"])',
        ]
    lines += ["```", ""]
    if results:
        lines += [
            "## Results",
            "",
            "Mean over fixed test episodes, ± half-width of the 95% confidence interval "
            "(Student t), in %" + (f"; episode set `{episode_set}`." if episode_set else "."),
            "",
            comparison_table(results),
            "",
        ]
    for title, settings in (("Hyperparameters", hyperparameters), ("Meta-training", training)):
        if settings:
            lines += [f"## {title}", ""]
            lines += [
                f"- {key}: `{value if isinstance(value, str) else json.dumps(value)}`"
                for key, value in settings.items()
            ]
            lines += [""]
    lines += ["## Framework versions", ""]
    lines += [f"- {lib} {version}" for lib, version in framework_versions().items()]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n"))


def framework_versions() -> dict[str, str]:
    """Installed versions of the libraries a learner was saved with (`FRAMEWORKS`)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for lib in FRAMEWORKS:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            continue
    return out


def _eval_results(
    results: Sequence[Mapping[str, Any]], pipeline: str, episode_set: str | None
) -> list[Any]:
    """`EvalResult` entries (in %) of each summarised metric of ``results``."""
    from huggingface_hub import EvalResult

    out = []
    for result in results:
        episodes = result.get("episodes") or []
        dataset = next((e["task"] for e in episodes if e.get("task")), None)
        where = result.get("episode_set") or episode_set or "test episodes"
        for metric, stat in result.get("summary", {}).items():
            if stat.get("mean") is None:
                continue
            ci = stat.get("ci")
            spread = "" if ci is None or ci != ci else f" ± {100 * ci:.2f}"
            out.append(
                EvalResult(
                    task_type=pipeline,
                    dataset_type=str(dataset or where),
                    dataset_name=str(where),
                    metric_type=metric,
                    metric_value=round(100 * float(stat["mean"]), 2),
                    metric_name=f"{metric} (%, mean{spread} over {stat.get('n')} episodes, "
                    f"{result.get('method')})",
                )
            )
    return out


def _base_model_card_data(base_model: str) -> Any:
    """The metadata of the base model's own card if it is on this machine, else ``None``
    (never a download: saving a learner stays offline)."""
    from huggingface_hub import ModelCard, try_to_load_from_cache

    from metanlp.models import DEFAULT_MODEL_HUB_ID, default_model_path

    path: Any = None
    try:
        if base_model == DEFAULT_MODEL_HUB_ID:
            path = default_model_path() / CARD_NAME
        elif Path(base_model).is_dir():
            path = Path(base_model) / CARD_NAME
        elif _is_hub_id(base_model):
            path = try_to_load_from_cache(base_model, CARD_NAME)
        if not isinstance(path, (str, Path)) or not Path(path).is_file():
            return None
        return ModelCard.load(path, ignore_metadata_errors=True).data
    except Exception:  # a missing or unreadable card only loses license / language
        return None


def card_for_repo(text: str, repo_id: str) -> str:
    """The card ``text`` naming ``repo_id`` in its usage snippet and ``model-index``, as
    `push_folder` uploads it: `REPO_PLACEHOLDER` is replaced, and so is another repo id a card
    saved with ``save_pretrained(repo_id=...)`` names (pushed elsewhere)."""
    from huggingface_hub import ModelCard

    text = text.replace(REPO_PLACEHOLDER, repo_id)
    try:
        card = ModelCard(text, ignore_metadata_errors=True)
    except Exception:  # a hand-edited card that is not a model card: upload it as it is
        return text
    named = card.data.model_name
    if named and named != repo_id:
        card.data.model_name = repo_id
        card.text = card.text.replace(
            f'from_pretrained("{named}")', f'from_pretrained("{repo_id}")'
        )
        return str(card)
    return text


def _is_hub_id(name: str) -> bool:
    # Local folders (absolute, relative, home) are not Hub ids and would break card validation.
    return (
        bool(name)
        and not os.path.isabs(name)
        and not name.startswith((".", "~"))
        and (name.count("/") == 1 and not Path(name).exists())
    )


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload metanlp learner",
    endpoint: str | None = None,
) -> str:
    """Create `repo_id` (if needed) and commit the learner files of `folder` to it in one commit;
    the card's `REPO_PLACEHOLDER` becomes ``repo_id`` (the folder itself is left as it is).

    Only the learner's (or saved predictor's) own files are uploaded (`pushed_files`: the names
    `metanlp.serialization.LEARNER_FILE_PATTERNS` allows); anything else in the folder stays
    on this machine, and a symbolic link is never followed.

    Args:
        folder (`str` or `os.PathLike`): A folder written by `MetaLearner.save_pretrained`.
        repo_id (`str`): ``"user/name"`` or ``"org/name"``.
        private (`bool`, *optional*): Create the repo private; ignored if it exists.
        token (`str`, *optional*): Hub token; defaults to ``HF_TOKEN`` or the saved login.
        commit_message (`str`): Message of the commit.
        endpoint (`str`, *optional*): Hub URL (defaults to ``HF_ENDPOINT`` or huggingface.co).

    Returns:
        `str`: URL of the commit.

    Raises:
        FileNotFoundError: `folder` holds no ``metanlp_config.json`` (it is not a learner).
        ValueError: a learner file in it is a symbolic link.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    folder = Path(folder)
    files = pushed_files(folder)
    if constants.is_offline_mode():
        raise RuntimeError(
            "Pushing needs the network but HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE to push."
        )
    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    # One explicit commit (rather than upload_folder's streamed pipeline) keeps the push atomic:
    # the repo never shows a half-uploaded learner. The contents are read here, not by path, so
    # nothing swapped in after the check is uploaded.
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=data)
        for name, data in files.items()
        if name != CARD_NAME
    ]
    card = card_for_repo(files[CARD_NAME].decode("utf-8"), repo_id)
    operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card.encode()))
    info = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    return str(info.commit_url)


def pushed_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """What a push uploads from `folder`: a saved predictor's own files (its JSON, fast weights
    and card) with its learner's files under ``learner/``, or a learner's own files
    (`learner_files`). Nothing else, and no symbolic link."""
    from metanlp.predictors import LEARNER_DIR, PREDICTOR_FILE_PATTERNS, is_predictor_folder

    folder = Path(folder)
    if folder.is_symlink() or not is_predictor_folder(folder):
        return learner_files(folder)
    files: dict[str, bytes] = {}
    for name in PREDICTOR_FILE_PATTERNS:
        path = folder / name
        if path.is_symlink():
            raise ValueError(
                f"{path} is a symbolic link; metanlp never uploads what a link points at. "
                "Save the predictor again."
            )
        if path.is_file():
            files[name] = path.read_bytes()
    for rel, data in learner_files(folder / LEARNER_DIR).items():
        files[f"{LEARNER_DIR}/{rel}"] = data
    return dict(sorted(files.items()))


def learner_files(folder: str | os.PathLike) -> dict[str, bytes]:
    """The learner's own files in `folder` (path in the repo -> contents), for a push.

    A file is the learner's when its path matches `metanlp.serialization.LEARNER_FILE_PATTERNS`;
    everything else is left out. No symbolic link is followed: one in the place of a learner
    file or folder (``README.md -> ~/.ssh/id_rsa``, ``encoder -> ~``) is refused, any other is
    left out with the other files.

    Raises:
        FileNotFoundError: `folder` holds no ``metanlp_config.json`` or no ``README.md``.
        ValueError: `folder` itself, or a learner file or folder in it, is a symbolic link.
    """
    from metanlp.serialization import CONFIG_NAME, LEARNER_DIRS, is_learner_file

    folder = Path(folder)
    if folder.is_symlink():
        raise ValueError(
            f"{folder} is a symbolic link; metanlp never uploads what a link points at. Push "
            f"the folder it points to ({folder.resolve()}) by its own path."
        )
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(
            f"{folder} is not a metanlp learner folder (no {CONFIG_NAME}); push a folder "
            "written by MetaLearner.save_pretrained, or use learner.push_to_hub()."
        )
    files: dict[str, bytes] = {}
    for root, dirs, names in os.walk(folder):  # os.walk does not follow links to folders
        for name in sorted(dirs + names):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                if is_learner_file(rel) or rel in LEARNER_DIRS:
                    raise ValueError(
                        f"{path} is a symbolic link; metanlp never uploads what a link points "
                        "at. Replace it with the file itself (save the learner again)."
                    )
                continue
            if path.is_file() and is_learner_file(rel):
                files[rel] = path.read_bytes()
    if CARD_NAME not in files:
        raise FileNotFoundError(
            f"{folder} has no {CARD_NAME}; push a folder written by MetaLearner.save_pretrained."
        )
    return dict(sorted(files.items()))
