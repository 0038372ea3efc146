"""Model cards and pushing a saved metanlp folder to the Hugging Face Hub.

The card is a README.md with YAML metadata (base model, datasets, method, N/K) and the results
table with 95% confidence intervals. Pushing uses `huggingface_hub.HfApi`: create the repo, then
one commit holding every file of the folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from metanlp.evaluation import comparison_table

CARD_NAME = "README.md"


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
) -> str:
    """Write the text of a model card (README.md) for a meta-trained learner.

    Args:
        base_model (`str`): Encoder the learner starts from (Hub id or name).
        method (`str`): Meta-learning algorithm, e.g. ``"maml"``, ``"protonet"``.
        task (`str`): ``"sequence"`` (text classification) or ``"token"`` (NER).
        n_way, k_shot (`int`, *optional*): Episode shape used for meta-training.
        datasets (`Sequence[str]`): Datasets used for meta-training.
        results (`Sequence[Mapping]`): Evaluation results (see `metanlp.evaluation.evaluate`).
        episode_set (`str`, *optional*): Name of the fixed test episode set behind `results`.
        repo_id (`str`, *optional*): Used in the usage snippet; defaults to a placeholder.
        meta_trained (`bool`, defaults to True): False for a learner that was never meta-trained.
    """
    pipeline = "token-classification" if task == "token" else "text-classification"
    meta: dict[str, Any] = {
        "library_name": "metanlp",
        "pipeline_tag": pipeline,
        "tags": ["metanlp", "few-shot", "meta-learning", method],
    }
    if _is_hub_id(base_model):
        meta["base_model"] = base_model
    if datasets:
        meta["datasets"] = [d for d in datasets if _is_hub_id(d)] or None
        if meta["datasets"] is None:
            del meta["datasets"]
    meta["metanlp"] = {
        "method": method,
        "task": task,
        "meta_trained": meta_trained,
        "n_way": n_way,
        "k_shot": k_shot,
    }
    if datasets:
        meta["metanlp"]["meta_training_data"] = list(datasets)
    shape = f"{n_way}-way {k_shot}-shot " if n_way and k_shot else ""
    kind = "named-entity recognition" if task == "token" else "text classification"
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# Few-shot {kind} learner ({method})",
        "",
        (
            f"Meta-trained with metanlp ({method}, {shape}episodes) from `{base_model}`"
            + (f" on {', '.join(f'`{d}`' for d in datasets)}." if datasets else ".")
            if meta_trained
            else f"`{base_model}` with metanlp's {method} adaptation, without meta-training."
        ),
        "It adapts to new classes from a handful of labelled examples; its own weights are",
        "never modified by adaptation.",
        "",
        "## Usage",
        "",
        "```python",
        "from metanlp import MetaLearner",
        "",
        f'learner = MetaLearner.from_pretrained("{repo_id or "<this repo id or folder>"}")',
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
    return "\n".join(lines)


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
    """Create `repo_id` (if needed) and commit the learner files of `folder` to it in one commit.

    Only the learner's own files are uploaded (`learner_files`: the names
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
    files = learner_files(folder)
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
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=data) for name, data in files.items()
    ]
    info = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    return str(info.commit_url)


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
