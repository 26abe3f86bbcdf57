"""Command line: ``pkpd validate | ...``.

Exit codes: 0 success, 2 bad input (every problem printed, never a traceback), 1 other errors.
"""

from __future__ import annotations

import argparse
import sys

EXIT_BAD_INPUT = 2


def _validate(args: argparse.Namespace) -> int:
    from pkpd.data import DatasetError, read_dataset

    try:
        ds = read_dataset(args.data, dose_unit=args.dose_unit)
    except DatasetError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(ds.summary_text())
    print("OK: no problems found")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pkpd", description="Population PK/PD modelling: validate, fit, simulate, report."
    )
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a NONMEM-style dataset and summarise it")
    v.add_argument("data", help="CSV file (NONMEM-style)")
    v.add_argument(
        "--dose-unit",
        default="mg",
        choices=["mg", "mg/m2"],
        help="unit of AMT where the data have no AMTU column (default mg)",
    )
    v.set_defaults(func=_validate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
