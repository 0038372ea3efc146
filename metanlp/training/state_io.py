"""Atomic, pickle-free checkpoints for meta-training.

A checkpoint is a folder ``checkpoint-<step>`` holding tensors in safetensors files and
everything else in JSON. Nothing is ever read back with pickle, so a checkpoint downloaded from
elsewhere cannot run code when loaded. Folders are written with `metanlp.files.write_folder`
(a temporary sibling renamed into place once every file is on disk): a process killed mid-write
leaves at most a ``.checkpoint-<step>.tmp-*`` folder, never a half-written ``checkpoint-<step>``,
and the leftovers are cleaned by the next write or by :func:`prune_checkpoints`.

Nested states (optimiser, sampler, RNG) are split by :func:`flatten_state` into a flat
``{path: tensor}`` dict and a JSON skeleton that points at those paths, and put back together by
:func:`unflatten_state`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from metanlp.files import CorruptFileError, read_json, read_safetensors, recover_folders

CHECKPOINT_PREFIX = "checkpoint-"
DAMAGED_FIX = (
    "the checkpoint {folder} is damaged: resume from an earlier checkpoint-* folder (pass its "
    "path as resume_from_checkpoint) or delete this one."
)
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def flatten_state(state: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state into a JSON-serialisable skeleton and a flat dict of tensors.

    Tensors and numpy arrays are replaced by ``{"__tensor__": key}`` markers; tuples and
    integer-keyed dicts (optimiser states) are tagged so that :func:`unflatten_state` restores
    them exactly.

    Raises:
        TypeError: for values that are neither JSON types, tensors nor numpy arrays (the error
            names the path of the offending value).
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            tensors[path] = value.detach().cpu().contiguous()
            return {_TENSOR: path}
        if isinstance(value, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(value))
            return {_NDARRAY: path}
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, dict):
            int_keys = bool(value) and all(isinstance(k, int) for k in value)
            if not int_keys and not all(isinstance(k, str) for k in value):
                raise TypeError(
                    f"state at {path or '<root>'!r} has keys that are not all str or all int"
                )
            out = {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
            return {_INTKEYS: out} if int_keys else out
        if isinstance(value, (list, tuple)):
            items = [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(value)]
            return {_TUPLE: items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(
            f"cannot checkpoint {type(value).__name__} at {path or '<root>'!r}: states must hold "
            "only tensors, numpy arrays, dicts, lists, tuples, str, int, float, bool or None"
        )

    return walk(state, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            return tensors[skeleton[_TENSOR]]
        if set(skeleton) == {_NDARRAY}:
            return tensors[skeleton[_NDARRAY]].numpy()
        if set(skeleton) == {_TUPLE}:
            return tuple(unflatten_state(v, tensors) for v in skeleton[_TUPLE])
        if set(skeleton) == {_INTKEYS}:
            return {int(k): unflatten_state(v, tensors) for k, v in skeleton[_INTKEYS].items()}
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(folder: str | os.PathLike, name: str, state: Any) -> None:
    """Write ``state`` as ``<name>.json`` (+ ``<name>.safetensors`` when it holds tensors)."""
    folder = Path(folder)
    skeleton, tensors = flatten_state(state)
    if tensors:
        save_file(tensors, str(folder / f"{name}.safetensors"))
    _write_json(folder / f"{name}.json", skeleton)


def load_state(folder: str | os.PathLike, name: str) -> Any:
    """Read a state written by :func:`save_state` (no pickle involved).

    Raises:
        FileNotFoundError, CorruptFileError: naming the file that is missing, truncated or
            malformed.
    """
    folder = Path(folder)
    fix = DAMAGED_FIX.format(folder=folder)
    skeleton = read_json(folder / f"{name}.json", fix)
    tensor_file = folder / f"{name}.safetensors"
    tensors = read_safetensors(tensor_file, fix) if tensor_file.exists() else {}
    try:
        return unflatten_state(skeleton, tensors)
    except KeyError as err:
        raise CorruptFileError(
            f"{folder / f'{name}.json'} refers to tensor {err} that {tensor_file.name} lacks; {fix}"
        ) from None


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, sort_keys=True, allow_nan=True))


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU + CUDA) RNG states, in a form :func:`save_state` accepts."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``output_dir``, oldest step first (temporary folders ignored)."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in output_dir.iterdir()
        if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in ``output_dir``, or ``None``."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def recover_checkpoints(output_dir: str | os.PathLike) -> None:
    """Restore checkpoints a killed writer left moved aside and delete dead writers' leftovers."""
    recover_folders(output_dir, _CHECKPOINT_RE)


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints and leftover temporary folders."""
    output_dir = Path(output_dir)
    recover_checkpoints(output_dir)
    if keep is None:
        return
    found = list_checkpoints(output_dir)
    for old in found[: max(0, len(found) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
