"""Build BIG-bench tasks from the bigbench==1.0.0 sdist (optional; never part of `make data`).

Tasks: language_identification, intent_recognition, bbq_lite_ambig, polish_sequence_labeling,
or any fixed-label task directory of the sdist (e.g. multiemo/all_text_en). Output goes to
OUT/bigbench/<task>. The sdist (358 MB) is read, never installed; --download fetches it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metanlp.corpora import CorpusError, bigbench


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="data", help="data folder (default: data)")
    parser.add_argument(
        "--task",
        action="append",
        dest="tasks",
        help=f"task to build (repeatable; default: {', '.join(bigbench.TASKS)})",
    )
    parser.add_argument(
        "--sdist",
        default=None,
        help=f"path of {bigbench.SDIST_NAME} (default: {bigbench.default_sdist_path()})",
    )
    parser.add_argument(
        "--download", action="store_true", help="download the sdist first if it is missing"
    )
    parser.add_argument(
        "--index-url", default=bigbench.INDEX_URL, help="PEP 503 index for --download"
    )
    parser.add_argument(
        "--families",
        action="store_true",
        help="also find and build every fixed-label task (the general learner's labelled "
        "families; writes OUT/bigbench/families.json)",
    )
    parser.add_argument(
        "--if-present", action="store_true",
        help="build only when the sdist is already on disk; otherwise say so and exit 0 (the "
        "index no longer serves bigbench 1.0.0; `make general` uses this)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        sdist = Path(args.sdist) if args.sdist else bigbench.default_sdist_path()
        if args.if_present and not sdist.is_file():
            print(f"BIG-bench skipped: no {bigbench.SDIST_NAME} at {sdist} (optional; the package "
                  "index no longer serves it).")  # fmt: skip
            return
        if args.download and not sdist.is_file():
            print(f"downloading {bigbench.SDIST_NAME} to {sdist} ...")
            bigbench.download_sdist(sdist, args.index_url)
        for result in bigbench.build(
            args.tasks or list(bigbench.TASKS), args.out, sdist, force=args.force
        ):
            print(result.report())
        if args.families:
            results, summary = bigbench.build_families(args.out, sdist, force=args.force)
            for result in results:
                print(result.report())
            print(
                f"fixed-label families: {len(summary['used'])} used, "
                f"{len(summary['skipped'])} skipped (reasons in {args.out}/bigbench/"
                f"{bigbench.FAMILIES_FILE})"
            )
    except CorpusError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
