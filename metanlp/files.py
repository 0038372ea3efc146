"""Writing folders atomically, and reading files with errors that name them.

Every folder metanlp writes to be read later (``checkpoint-<step>``, ``best/``, a saved learner)
goes through :func:`write_folder`:

1. ``write(tmp)`` fills a hidden sibling ``.<name>.tmp-<pid>-<token>``;
2. every file and folder in it is fsynced;
3. an existing ``<name>`` is renamed to ``.<name>.old-<pid>-<token>``, the new folder is renamed
   to ``<name>`` and the parent folder is fsynced;
4. the old copy is deleted.

A process killed at any point leaves either the old or the new folder complete on disk: between
the two renames of step 3 the old one is only under its ``.old-`` name, and
:func:`recover_folder` (run before every write and every load) renames it back. It also deletes
the ``.tmp-`` and ``.old-`` leftovers of writers that are no longer running (the process id is in
the name, so the folder of a writer still at work is never touched). Only names of exactly that
shape (hidden, process id, 8 hex digits) are leftovers: a user's ``<name>.old-v1/`` is theirs.

The readers (:func:`read_json`, :func:`read_safetensors`, :func:`check_tensors`) raise
:class:`CorruptFileError` naming the file, what is wrong with it and what to do, instead of the
parsers' own errors, which name no file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError

_TOKEN_BYTES = 4
_LEFTOVER = re.compile(
    rf"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>[1-9][0-9]*)-[0-9a-f]{{{2 * _TOKEN_BYTES}}}$"
)
"""The exact names :func:`write_folder` gives its temporary and moved-aside folders."""


class CorruptFileError(ValueError):
    """A file metanlp reads is truncated, incomplete or not in the expected format.

    The message names the file, what is wrong with it and how to get a good copy.
    """


# ---- writing ---------------------------------------------------------------------------------
def write_folder(target: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Fill a new folder with ``write(tmp)`` and swap it in as ``target`` once it is on disk.

    Whatever is at ``target`` (a folder, or a file) is replaced: callers that must not replace
    unrelated data check the target first (see `metanlp.serialization.save_learner`).

    Args:
        target (`str` or `os.PathLike`): The folder to (re)write; its parent is created.
        write (`Callable[[Path], None]`): Writes every file into the empty folder it is given.

    Returns:
        `Path`: ``target``.

    Example:
        ```python
        >>> write_folder("runs/x/best", lambda tmp: (tmp / "a.json").write_text("{}"))
        PosixPath('runs/x/best')
        ```
    """
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    recover_folder(target)
    token = f"{os.getpid()}-{secrets.token_hex(_TOKEN_BYTES)}"
    tmp = parent / f".{target.name}.tmp-{token}"
    old = parent / f".{target.name}.old-{token}"
    tmp.mkdir()
    moved_aside = False
    try:
        try:
            write(tmp)
            fsync_tree(tmp)
        except (OSError, SafetensorError) as err:  # a full disk, a quota, a file size limit
            raise WriteError(
                f"Could not write {target} ({_reason(err)}); nothing was replaced (any earlier "
                f"{target.name} is intact). Free disk space or write somewhere else."
            ) from err
        if os.path.lexists(target):
            os.replace(target, old)
            moved_aside = True
        os.replace(tmp, target)
        fsync_dir(parent)
    except BaseException:
        if moved_aside and not os.path.lexists(target):
            os.replace(old, target)
            moved_aside = False
        _remove(tmp)
        raise
    if moved_aside:
        _remove(old)
    return target


class WriteError(OSError):
    """`write_folder` could not write the new folder (disk full, quota, permissions); the
    message names the target, and the previous folder is left as it was."""


def _reason(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return f"{err.strerror}: {err.filename}" if err.filename else err.strerror
    return " ".join(str(err).split())


def recover_folder(target: str | os.PathLike) -> None:
    """Finish what a killed :func:`write_folder` of ``target`` left behind.

    If ``target`` is missing but a dead writer moved it aside (``.<name>.old-*``), it is renamed
    back; then the ``.tmp-`` / ``.old-`` leftovers of dead writers are deleted. Leftovers of a
    writer that is still running are left alone.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    stale = [(p, kind) for p, kind, pid in _leftovers(parent, target.name) if not _alive(pid)]
    if not os.path.lexists(target):
        olds = sorted((p for p, kind in stale if kind == "old"), key=_mtime)
        if olds:
            os.replace(olds[-1], target)
            fsync_dir(parent)
    for path, _ in stale:
        if os.path.lexists(path):
            _remove(path)


def recover_folders(parent: str | os.PathLike, name: re.Pattern[str]) -> None:
    """:func:`recover_folder` for every target in ``parent`` whose name fully matches ``name``
    and that has leftovers (e.g. every ``checkpoint-<step>`` of an output folder)."""
    parent = Path(parent)
    if not parent.is_dir():
        return
    targets = set()
    for entry in os.listdir(parent):
        match = _LEFTOVER.match(entry)
        if match and name.fullmatch(match["name"]):
            targets.add(match["name"])
    for target in sorted(targets):
        recover_folder(parent / target)


def _leftovers(parent: Path, name: str) -> list[tuple[Path, str, int]]:
    """``(path, "tmp" | "old", writer pid)`` of the leftovers of ``parent / name``: only entries
    named exactly as :func:`write_folder` names them (``.<name>.tmp-<pid>-<8 hex digits>``,
    ``.<name>.old-<pid>-<8 hex digits>``). Anything else, however similar its name (a user's
    ``<name>.old-v1/`` or ``<name>.tmp-experiment``), is not ours and is never touched."""
    found = []
    for entry in os.listdir(parent):
        match = _LEFTOVER.match(entry)
        if match and match["name"] == name:
            found.append((parent / entry, match["kind"], int(match["pid"])))
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _mtime(path: Path) -> float:
    return path.lstat().st_mtime


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def fsync_tree(folder: str | os.PathLike) -> None:
    """fsync every file under ``folder``, then every folder (deepest first) and ``folder`` itself,
    so the files' contents and their directory entries are on disk."""
    folder = Path(folder)
    dirs = [folder]
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            dirs.append(path)
        elif path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(path)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a folder's entries (a rename is durable only once its folder is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders (Windows) have no folder fsync
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- reading ---------------------------------------------------------------------------------
def read_json(path: str | os.PathLike, fix: str) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises an error naming it.

    Args:
        path (`str` or `os.PathLike`): The file.
        fix (`str`): What the user should do, appended to the message.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: the file is empty, not UTF-8 or not valid JSON.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise CorruptFileError(f"{path} nests lists or objects too deeply to read; {fix}") from None
    except json.JSONDecodeError as err:
        where = "is empty" if not err.doc.strip() else f"is not valid JSON ({err})"
        raise CorruptFileError(f"{path} {where}; {fix}") from None
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path} is not UTF-8 text; {fix}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` (plain data, no tags that build objects) that refuses a mapping with a
    key given twice, where `yaml.safe_load` silently keeps the last value."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"key {key!r} is given twice (first on line {seen[key] + 1}); keep one",
                        key_node.start_mark,
                    )  # fmt: skip
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


def safe_load_yaml(text: str) -> Any:
    """Parse YAML as plain data like `yaml.safe_load`, but refuse duplicated keys.

    Raises:
        yaml.YAMLError: malformed YAML or a key given twice in one mapping (with its line).
    """
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_safetensors(
    path: str | os.PathLike, fix: str, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or corrupt file raises an error naming it.

    Raises:
        FileNotFoundError: the file does not exist.
        CorruptFileError: the file is empty, truncated or not a safetensors file.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    if path.stat().st_size == 0:
        raise CorruptFileError(f"{path} is empty (0 bytes); {fix}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise CorruptFileError(
            f"{path} is not a readable safetensors file ({err}); it is truncated or corrupt: {fix}"
        ) from None


def check_tensors(
    found: Mapping[str, torch.Tensor],
    expected: Mapping[str, Iterable[int]],
    path: str | os.PathLike,
    fix: str,
    *,
    finite: bool = True,
) -> None:
    """Check that a file's tensors are exactly the expected ones, with the expected shapes, and
    (with ``finite``) hold no NaN or infinity.

    Args:
        found (`Mapping[str, torch.Tensor]`): What the file holds.
        expected (`Mapping[str, Iterable[int]]`): Name -> shape the model needs.
        path (`str` or `os.PathLike`): The file, for the message.
        fix (`str`): What the user should do, appended to the message.
        finite (`bool`, defaults to True): Also refuse NaN / infinite values.

    Raises:
        CorruptFileError: naming the file and the first offending tensors.
    """
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CorruptFileError(
            f"{path} lacks {len(missing)} of the {len(expected)} tensors the model needs "
            f"(e.g. {missing[:3]}); the file is incomplete: {fix}"
        )
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CorruptFileError(
            f"{path} holds {len(unexpected)} tensors the model does not have (e.g. "
            f"{unexpected[:3]}); it was written for another model or config: {fix}"
        )
    for name in sorted(expected):
        shape, want = tuple(found[name].shape), tuple(expected[name])
        if shape != want:
            raise CorruptFileError(
                f"{path}: tensor {name!r} has shape {shape} but the model needs {want}; it was "
                f"written for another model or config: {fix}"
            )
    if finite:
        bad = sorted(
            n
            for n, t in found.items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())
        )
        if bad:
            raise CorruptFileError(
                f"{path}: {len(bad)} tensors hold NaN or infinite values (e.g. {bad[:3]}); {fix}"
            )
