"""Build the Colorist training set: `python -m data_gen.colorist --source synthetic --n 2000 --out colorist.jsonl`.

Thin wrapper: loading, checking, splitting and writing live in helpers.data.colorist (notebook 02 uses them too).
"""
from __future__ import annotations

import argparse
import json
import sys

from helpers.cli import positive_int
from helpers.data.colorist import (DEFAULT_SYNTHETIC, PROBE_TIMEOUT, SOURCES, load_colorist, split_heldout,
                                   to_conversations, write_colorist)
from helpers.errors import command


def _heldout(text: str) -> int | float:
    """'100' -> 100 records; '0.05' -> 5 % of them."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither a count (100) nor a fraction (0.05)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_gen.colorist",
        description="Colorist dataset -> XTuner conversation file (system = colorist template, input = description "
                    "after the first colon, output = hex colour) plus a held-out file <out stem>.heldout.jsonl.",
        epilog="auto: a --path or ./colors/train.jsonl (XTuner quickstart clone) is used as is; otherwise Hugging "
               "Face, then ModelScope, then the offline synthetic set. No network? --source synthetic.")
    parser.add_argument("--source", choices=SOURCES, default="auto", help="where the records come from (default auto)")
    parser.add_argument("--path", help="local .jsonl/.json file, or a folder with train.jsonl or colors.json")
    parser.add_argument("--out", required=True, help="output file: .jsonl, or .json for one JSON array")
    parser.add_argument("--heldout", type=_heldout, default=None,
                        help="held-out records: a count (100) or a fraction (0.05); 0 for none "
                             "(default: 100 or 10%% of the records, whichever is smaller)")
    parser.add_argument("--limit", type=positive_int, help="use only the first N source records")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the synthetic set (default 0)")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_SYNTHETIC,
                        help=f"records to generate with the synthetic source (default {DEFAULT_SYNTHETIC})")
    parser.add_argument("--timeout", type=float, default=PROBE_TIMEOUT,
                        help=f"seconds to wait for a hub before giving up on it (default {PROBE_TIMEOUT:g})")
    return parser


@command
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    records, source, notes = load_colorist(args.source, path=args.path, limit=args.limit, seed=args.seed,
                                           n_synthetic=args.n, timeout=args.timeout)
    for note in notes:
        print(note)
    train, heldout = split_heldout(records, args.heldout, seed=args.seed)
    written = write_colorist(args.out, train, heldout)
    label = " (SYNTHETIC stand-in, not the real Colorist data)" if source == "synthetic" else ""
    print(f"source: {source}{label}")
    print(f"records: {len(records)}  train: {len(train)} -> {written['train']}  held-out: {len(heldout)}"
          + (f" -> {written['heldout']}" if written["heldout"] else ""))
    if written["removed"]:
        print(f"removed the old held-out file {written['removed']} (no held-out set this time)")
    sample = records[0]
    print(f"sample record: {json.dumps({k: sample[k] for k in ('description', 'color')}, ensure_ascii=False)}")
    print(f"as training turn: {json.dumps(to_conversations([sample])[0], ensure_ascii=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
