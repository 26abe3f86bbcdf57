"""Command line: ``pkpd validate | predict | ...``.

Exit codes: 0 success, 2 bad input (every problem printed, never a traceback), 1 other errors.
"""

from __future__ import annotations

import argparse
import json
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


def _predict(args: argparse.Namespace) -> int:
    from pkpd.data import DatasetError, read_dataset
    from pkpd.models import load_model
    from pkpd.models.predict import parse_params, predict_dataset

    try:
        model = load_model(args.model)
        params = parse_params(args.params)
        ds = read_dataset(
            args.data, dose_unit=args.dose_unit, compartments=list(model.compartments)
        )
        pred = predict_dataset(ds, model, params)
        table = _input_rows(args.data, ds)
    except DatasetError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError) as e:
        print(f"pkpd predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    table["PRED"] = pred
    try:
        table.to_csv(args.out, index=False)
    except OSError as e:
        print(f"pkpd predict: cannot write {args.out}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"{model.name}: predictions for {len(table)} records of {ds.n_subjects} subjects written "
        f"to {args.out} (PRED: each record's endpoint; dose records: the central concentration, "
        "ng/mL)"
    )
    return 0


def _fit(args: argparse.Namespace) -> int:
    import numpyro

    # Parallel chains need that many JAX devices; on CPU they are host devices, which must be
    # set before JAX starts its backend (nothing has touched a device yet at this point).
    numpyro.set_host_device_count(max(args.chains, 1))
    from pkpd.data import DatasetError
    from pkpd.inference.fit import FitError, fit, save_fit
    from pkpd.inference.priors import PriorsError
    from pkpd.inference.summary import convergence_warnings, format_table, parameter_table

    try:
        idata = fit(
            args.model,
            args.data,
            args.priors,
            chains=args.chains,
            warmup=args.warmup,
            draws=args.draws,
            seed=args.seed,
            method=args.method,
            covariates=args.covariate or None,
            endpoints=args.endpoint or None,
            progress_bar=not args.quiet,
            parameterization=args.parameterization,
        )
    except (DatasetError, PriorsError, FitError) as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:
        print(f"pkpd fit: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        save_fit(idata, args.out)
    except OSError as e:
        print(f"pkpd fit: cannot write {args.out}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    table = parameter_table(idata)
    print(f"model {idata.attrs['model']}: {args.method} fit written to {args.out}")
    dropped = idata.attrs.get("dropped_covariate_effects", "[]")
    if dropped != "[]":
        print(f"covariate effects not used: {dropped}")
    for eff in json.loads(idata.attrs.get("covariate_effects_detail", "[]")):
        prior = dict(eff["prior"])
        fam = prior.pop("family")
        how = f"fixed at {prior['value']}" if fam == "fixed" else f"estimated, prior {fam}{prior}"
        ref = "" if eff["reference"] is None else f", reference {eff['reference']:g}"
        print(f"covariate effect {eff['name']}: {eff['form']} of {eff['covariate']} on "
              f"{eff['parameter']}{ref}, {how}")  # fmt: skip
    print(format_table(table))
    warnings = convergence_warnings(idata, table) if args.method == "nuts" else []
    for w in warnings:
        print(f"WARNING: {w}")
    if args.method == "nuts" and not warnings:
        print("convergence: R-hat <= 1.01, bulk and tail ESS >= 400, no divergences")
    return 0


def _input_rows(path, ds):
    """The input file's data records (comment lines dropped), as text, in file order."""
    import pandas as pd

    lines = set(ds.records["LINE"].tolist())
    comments = set(ds.comment_lines)
    with open(path, encoding="utf-8-sig") as fh:
        text = fh.read().splitlines()
    header = next(i + 1 for i, line in enumerate(text) if line.strip() and i + 1 not in comments)
    first = text[header - 1]
    sep = "," if "," in first else ("\t" if "\t" in first else r"\s+")
    keep = lines | {header}
    table = pd.read_csv(
        path,
        sep=sep,
        dtype=str,
        keep_default_na=False,
        skiprows=lambda i: i + 1 not in keep,
        skip_blank_lines=False,
        engine="python",
        encoding="utf-8-sig",
    )
    if len(table) != len(ds.records):  # pragma: no cover - defensive
        raise ValueError(f"could not re-read the records of {path} to write them out")
    return table


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
    pr = sub.add_parser(
        "predict",
        help="predict every record with fixed parameters (input rows plus a PRED column)",
    )
    pr.add_argument("data", help="CSV file (NONMEM-style)")
    pr.add_argument("--model", required=True, help="model name, e.g. one_cmt_oral")
    pr.add_argument(
        "--params",
        required=True,
        help='e.g. "cl=1.1,v=20,ka=1.5,lag_central=LAGT": each a number or a data column '
        "(read per record: dose modifiers on each dose's record, structural parameters per "
        "subject)",
    )
    pr.add_argument("--out", required=True, help="output CSV: the input rows plus PRED (ng/mL)")
    pr.add_argument(
        "--dose-unit",
        default="mg",
        choices=["mg", "mg/m2"],
        help="unit of AMT where the data have no AMTU column (default mg)",
    )
    pr.set_defaults(func=_predict)
    f = sub.add_parser("fit", help="fit a population model (NumPyro NUTS) and save it as netCDF")
    f.add_argument("data", help="CSV file (NONMEM-style)")
    f.add_argument("--model", required=True, help="model name: temsirolimus, one_cmt_oral, ...")
    f.add_argument("--priors", default=None, help="priors TOML (default: priors/<model>.toml)")
    f.add_argument("--chains", type=int, default=4)
    f.add_argument("--warmup", type=int, default=500)
    f.add_argument("--draws", type=int, default=500)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--method", choices=["nuts", "map"], default="nuts")
    f.add_argument(
        "--covariate",
        action="append",
        help="covariate effect to use (repeat): the name of an effect in the priors file, or an "
        "expression such as 'cl,v~WT power(ref=70, fixed=0.75)', 'cl~CRCL linear', "
        "'cl~CYP3A4_INH categorical' (grammar and defaults: pkpd.inference.covariates); "
        "default: every effect of the priors file whose column exists",
    )
    f.add_argument(
        "--parameterization",
        choices=["centered", "noncentered"],
        default="centered",
        help="of the subject effects in NUTS: centered (default, rich data) or noncentered "
        "(sparse data)",
    )
    f.add_argument(
        "--endpoint",
        action="append",
        help="endpoint to fit (repeat), e.g. --endpoint temsirolimus --endpoint sirolimus; "
        "default: every endpoint in the data",
    )
    f.add_argument("--out", required=True, help="output netCDF (ArviZ InferenceData)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_fit)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
