"""Atomic, pickle-free checkpoints for meta-training.

A checkpoint is a folder ``checkpoint-<step>`` holding tensors in safetensors files and
everything else in JSON. Nothing is ever read back with pickle, so a checkpoint downloaded from
elsewhere cannot run code when loaded. Writing goes to a temporary sibling folder that is renamed
into place only when every file is on disk: a process killed mid-write leaves at most a
``.tmp-*`` folder, never a half-written ``checkpoint-<step>``.

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
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "checkpoint-"
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
    """Read a state written by :func:`save_state` (no pickle involved)."""
    folder = Path(folder)
    skeleton = json.loads((folder / f"{name}.json").read_text())
    tensor_file = folder / f"{name}.safetensors"
    tensors = load_file(str(tensor_file)) if tensor_file.exists() else {}
    return unflatten_state(skeleton, tensors)


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


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def write_checkpoint_atomically(
    output_dir: str | os.PathLike, name: str, write: Callable[[Path], None]
) -> Path:
    """Call ``write(tmp_folder)`` and rename the folder to ``output_dir/name`` once complete.

    An existing folder of that name is moved aside first and deleted only after the new one is in
    place, so there is always a complete copy on disk.

    Returns:
        `Path`: the final folder.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}.tmp-", dir=output_dir))
    try:
        write(tmp)
        _fsync_tree(tmp)
        final = output_dir / name
        old = None
        if final.exists():
            old = output_dir / f"{name}.old-{os.getpid()}"
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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


def prune_checkpoints(output_dir: str | os.PathLike, keep: int | None) -> None:
    """Delete all but the newest ``keep`` checkpoints and leftover temporary folders."""
    output_dir = Path(output_dir)
    # Only the main process writes checkpoints, so no other writer owns these leftovers.
    for pattern in ("*.tmp-*", "*.old-*"):
        for leftover in output_dir.glob(f"{CHECKPOINT_PREFIX}{pattern}"):
            shutil.rmtree(leftover, ignore_errors=True)
    if keep is None:
        return
    found = list_checkpoints(output_dir)
    for old in found[: max(0, len(found) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
