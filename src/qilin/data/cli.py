"""`qilin data build` and `qilin data check`, registered on the `data` sub-parsers by `add_commands`.

    qilin data build SOURCES.yaml --out DIR [--on-error skip] [--workers N] [key=value ...]
    qilin data check PATH [--format F]

`check` lists EVERY problem of a file (file:line: field 'x': message), one per line, then fails with
exit code 2; a clean file prints its format (given or detected) and counts. A whole-file problem (not
UTF-8, empty, a missing column) stops the reader, so it is the one problem listed.
`main(argv)` runs these commands alone (`python -m qilin.data.cli ...`), the way `qilin data` does.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from qilin.errors import QilinError


class _TrailingOverrides(argparse.ArgumentParser):
    """`build S --out D key=value`: argparse fills the positional `overrides` before --out and refuses
    key=value words after it; those are overrides too."""

    def parse_known_args(self, args=None, namespace=None):
        ns, extra = super().parse_known_args(args, namespace)
        more = [a for a in extra if "=" in a and not a.startswith("-")]
        ns.overrides = [*(ns.overrides or []), *more]
        return ns, [a for a in extra if a not in more]


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {value!r}")
    return int(value)


def add_commands(data_sub) -> None:
    """Register `build` and `check` on the sub-parsers of `qilin data`."""
    parser_class, data_sub._parser_class = data_sub._parser_class, _TrailingOverrides
    try:
        b = data_sub.add_parser("build", help="build stage datasets (JSONL + Parquet) and a data card from a sources file",
                                description="Build the stage datasets described by a sources file (see "
                                            "data/sources.yaml).")
    finally:
        data_sub._parser_class = parser_class
    b.add_argument("sources", help="sources file (YAML), e.g. data/sources.yaml")
    b.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    b.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="stop at the first malformed record (default), or skip malformed records and count "
                        "each reason in the card")
    b.add_argument("--workers", type=_positive, default=None,
                   help="processes for cleaning, encoding and fingerprinting items (default: one per CPU for "
                        "inputs over 32 MB, else 1); the output is the same for any number")
    b.add_argument("overrides", nargs="*", help="key=value settings of the sources file, e.g. seed=1 parquet=false")
    b.set_defaults(func=cmd_build)

    c = data_sub.add_parser("check", help="validate one data file: counts, or every problem with file, line and field")
    c.add_argument("path")
    c.add_argument("--format", help="one of the reader formats; detected when omitted")
    c.set_defaults(func=cmd_check)


def cmd_build(args) -> int:
    from qilin.data.build import build
    from qilin.data.sources import load_spec

    spec = load_spec(args.sources, args.overrides)
    card = build(spec, args.out, on_error=args.on_error, sources_file=args.sources, workers=args.workers)
    for path, f in card["files"].items():
        print(f"{path:<32} {f['count']:>9} items {f['characters']:>12} characters")
    skipped = sum(e["skipped"]["total"] for e in card["sources"].values())
    print(f"{len(card['sources'])} sources, {sum(e['read'] for e in card['sources'].values())} records read, "
          f"{skipped} skipped, {card['contamination']['removed_total']} training items removed for contamination; "
          f"accounting {'complete' if not card['accounting'] else 'PROBLEMS: ' + '; '.join(card['accounting'])}")
    print(Path(args.out) / "card.md")
    return 0


class _AllProblems(list):
    """Collects every skipped record's message (readers call `note`)."""

    def note(self, e) -> None:
        self.append(str(e))


def cmd_check(args) -> int:
    from qilin.data.readers import READERS, detect_format

    path = Path(args.path)
    if args.format and args.format not in READERS:
        raise QilinError(f"--format {args.format!r} is not one of {', '.join(READERS)}")
    fmt = args.format or detect_format(path)
    how = "given" if args.format else "detected; name another with --format"
    problems = _AllProblems()
    counts = Counter(rec.get("source", "?") for rec in READERS[fmt](path, on_error="skip", skipped=problems))
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        raise QilinError(f"{path}: format {fmt} ({how}): {len(problems)} problem(s), {sum(counts.values())} "
                         "records OK")
    print(f"{path}: format {fmt} ({how}); {sum(counts.values())} records OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`qilin data build|check` run on their own, with the CLI's error handling (one-line errors, exit 2)."""
    import argparse

    from qilin.entry import run_cli

    parser = argparse.ArgumentParser(prog="qilin data")
    add_commands(parser.add_subparsers(title="data commands", metavar="COMMAND"))
    return run_cli(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
