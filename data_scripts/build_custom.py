"""Build a corpus from your own CSV/TSV/JSON(L) file or a Hub dataset id, in metanlp's schema.

Classification: --text-column and --label-column (optional --domain-column).
NER: --tokens-column and --tags-column (--tag-scheme iob2|iob1|io).
Example: python data_scripts/build_custom.py reviews.csv --out data/reviews \\
             --text-column body --label-column stars
"""

from __future__ import annotations

import argparse

from metanlp.corpora import CorpusError, custom


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", help="a .csv/.tsv/.json/.jsonl file or a Hub dataset id")
    parser.add_argument("--out", required=True, help="target folder, e.g. data/reviews")
    parser.add_argument("--text-column")
    parser.add_argument("--label-column")
    parser.add_argument("--domain-column")
    parser.add_argument("--tokens-column")
    parser.add_argument("--tags-column")
    parser.add_argument("--tag-scheme", default="iob2", choices=custom.TAG_SCHEMES)
    parser.add_argument("--split", default="train", help="Hub split (default: train)")
    parser.add_argument("--config", default=None, help="Hub dataset configuration name")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        result = custom.build(
            args.source,
            args.out,
            text_column=args.text_column,
            label_column=args.label_column,
            domain_column=args.domain_column,
            tokens_column=args.tokens_column,
            tags_column=args.tags_column,
            tag_scheme=args.tag_scheme,
            split=args.split,
            config=args.config,
            force=args.force,
        )
        print(result.report())
    except CorpusError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
