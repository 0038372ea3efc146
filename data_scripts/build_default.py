"""Build the default corpora (wnut16, bbc_news, tweets) into DIR; skips what is up to date.

Used by `make data`. A re-run only reads each folder's build stamp, so it takes seconds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Progress bars from save_to_disk would bury the summaries in `make` logs.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from metanlp.corpora import DEFAULT_CORPORA, CorpusError, bbc_news, tweets, wnut16  # noqa: E402

BUILDERS = {"wnut16": wnut16.build, "bbc_news": bbc_news.build, "tweets": tweets.build}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data", help="data folder (default: data)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        for name in DEFAULT_CORPORA:
            print(BUILDERS[name](Path(args.out) / name, force=args.force).report())
    except CorpusError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
