"""Command line: ``pkpd validate | predict | ...``.

Exit codes: 0 success, 2 bad input (every problem printed, never a traceback), 130
interrupted (Ctrl-C), 1 other errors.

Outputs: every command checks before it starts working that its ``--out`` (and side outputs) can
be written and is none of its inputs (the same file after resolving links), and writes each
file atomically (a temporary file in the same folder, renamed into place), so an interrupted or
failed run leaves the previous file, or none, never half of one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pkpd._files import OutputError, atomic_write, check_output_folder, check_outputs

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _parse_errors(items) -> list[tuple[str, str]]:
    """``["conc=proportional", ...]`` (``--error``) into ``[(endpoint, model), ...]``."""
    out = []
    for item in items:
        for part in (x.strip() for x in item.split(",") if x.strip()):
            endpoint, eq, model = (x.strip() for x in part.partition("="))
            if not eq or not endpoint or not model:
                raise ValueError(
                    f"--error {item!r}: expected ENDPOINT=MODEL, e.g. conc=proportional (models: "
                    "additive, proportional, combined, lognormal, logit)"
                )
            out.append((endpoint, model.lower()))
    return out


def _parse_iov(items) -> list[tuple[str, float]]:
    """``["cl=0.3", "v"]`` (``--iov``) into ``[(parameter, scale), ...]`` (default 0.3)."""
    out = []
    for item in items:
        for part in (x.strip() for x in item.split(",") if x.strip()):
            name, eq, value = (x.strip() for x in part.partition("="))
            try:
                scale = float(value) if eq else 0.3
            except ValueError:
                scale = float("nan")
            if not name or not (scale > 0 and scale < float("inf")):
                raise ValueError(
                    f"--iov {item!r}: expected PARAMETER or PARAMETER=SCALE with a positive "
                    "scale (the half-normal prior of the occasion SD), e.g. --iov cl=0.3"
                )
            out.append((name, scale))
    return out


def _number_type(kind, ok, expected):
    """An argparse type: ``kind(text)`` (``int`` or ``float``) that must satisfy ``ok``."""
    noun = "an integer" if kind is int else "a number"

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{value} is not allowed; expected {expected}")
        return value

    return convert


_target_accept = _number_type(float, lambda v: 0.0 < v < 1.0, "0 < value < 1")
_positive_int = _number_type(int, lambda v: v >= 1, "an integer >= 1")
_nonnegative_int = _number_type(int, lambda v: v >= 0, "an integer >= 0")


def _pairs(items: list[str] | None, option: str, example: str) -> list[tuple[str, str]]:
    """``["1=conc,2=pca", "3=x"]`` -> ``[("1", "conc"), ("2", "pca"), ("3", "x")]``."""
    out = []
    for item in items or []:
        for part in item.split(","):
            if not part.strip():
                continue
            key, eq, value = (x.strip() for x in part.partition("="))
            if not eq or not key or not value:
                raise ValueError(f"{option} {part.strip()!r}: expected {example}")
            out.append((key, value))
    return out


def data_options(args: argparse.Namespace) -> dict:
    """``read_dataset`` keywords from ``--dvid``, ``--dv-unit`` and ``--molar-mass``.

    Raises
    ------
    ValueError
        For a malformed item, naming the option and what was expected.
    """
    out: dict = {}
    codes: dict[int, str] = {}
    for key, name in _pairs(args.dvid, "--dvid", "CODE=ENDPOINT, e.g. --dvid 1=conc,2=pca"):
        try:
            code = int(key)
        except ValueError:
            raise ValueError(
                f"--dvid {key}={name}: {key!r} is not a whole-number DVID code; expected "
                "CODE=ENDPOINT, e.g. --dvid 1=conc,2=pca"
            ) from None
        if code in codes and codes[code] != name:
            raise ValueError(f"--dvid maps code {code} twice ({codes[code]}, {name})")
        codes[code] = name
    if codes:
        out["endpoints"] = codes
    units = _pairs(args.dv_unit, "--dv-unit", "ENDPOINT=UNIT, e.g. --dv-unit conc=mg/L")
    if units:
        out["dv_units"] = dict(units)
    masses = {}
    for key, value in _pairs(
        args.molar_mass, "--molar-mass", "ENDPOINT=G_PER_MOL, e.g. --molar-mass conc=232.2"
    ):
        try:
            masses[key] = float(value)
        except ValueError:
            raise ValueError(
                f"--molar-mass {key}={value}: {value!r} is not a number; expected "
                "ENDPOINT=G_PER_MOL, e.g. --molar-mass conc=232.2"
            ) from None
    if masses:
        out["molar_mass"] = masses
    return out


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dvid",
        action="append",
        metavar="CODE=ENDPOINT",
        help="map DVID codes to endpoints (repeat or comma-separate), e.g. --dvid 1=conc,2=pca; "
        "default: the model's codes (temsirolimus: 1-5; a one-endpoint model takes the data's "
        "one code)",
    )
    parser.add_argument(
        "--dv-unit",
        action="append",
        metavar="ENDPOINT=UNIT",
        help="unit of an endpoint's DV and LLOQ where the data have no DVU column or leave it "
        "empty (repeat), e.g. --dv-unit conc=mg/L; converted to the model's unit (ng/mL for "
        "concentrations)",
    )
    parser.add_argument(
        "--molar-mass",
        action="append",
        metavar="ENDPOINT=G_PER_MOL",
        help="molar mass (g/mol) of an endpoint's drug, to convert molar units such as nmol/L",
    )


def _add_occasions_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--occasions",
        default=None,
        metavar="RULE",
        help="derive occasions from the doses where the data have no OCC column: 'dose' (each "
        "dose record followed by an observation starts one) or 'every N h|d|w' (cycles from "
        "each subject's first dose); the summary shows occasions per subject, and a fit "
        "whose priors give a parameter an iov entry varies it between them",
    )


class _PrintUnitWarnings:
    """Within the block, :class:`pkpd.data.DataUnitWarning` is printed at once as one
    ``WARNING: ...`` line on stderr (other warnings as usual)."""

    def __enter__(self):
        import warnings

        from pkpd.data.reader import DataUnitWarning

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        previous = warnings.showwarning
        warnings.simplefilter("always", DataUnitWarning)

        def show(message, category, *rest, **kw):
            if issubclass(category, DataUnitWarning):
                print(f"WARNING: {message}", file=sys.stderr, flush=True)
            else:
                previous(message, category, *rest, **kw)

        warnings.showwarning = show
        return self

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _priors(args: argparse.Namespace) -> int:
    from pkpd._files import atomic_write
    from pkpd.inference.priors import (
        PriorsError,
        bundled_priors_dir,
        load_priors,
        priors_template,
        priors_toml,
    )
    from pkpd.models import load_model

    try:
        check_outputs({"--out": args.out}, {"--model": args.model})
        model = load_model(args.model)
        bundled = bundled_priors_dir() / f"{model.name}.toml"
        if bundled.exists():
            text, what = bundled.read_text(encoding="utf-8"), f"pkpd's bundled priors ({bundled})"
        elif model.default_priors is not None:
            raw = dict(model.default_priors)
            load_priors(raw, model=model)  # the declarations must be valid priors
            what = f"the priors model {model.name!r} declares"
            text = priors_toml(raw, f"Priors of model {model.name!r}: {what}.")
        else:
            what = "a template: every entry a placeholder to replace (assumption = true)"
            text = priors_toml(
                priors_template(model),
                f"Priors of model {model.name!r}: a TEMPLATE. Every prior below is a wide\n"
                "placeholder; replace each with a published value, its spread and its source\n"
                "(schema: the priors documentation), then fit with --priors this file.",
            )
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except (PriorsError, ValueError, OSError) as e:
        print(f"pkpd priors: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.out}: {what}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from pkpd.data import DatasetError, read_dataset

    try:
        model = None
        if args.model:
            from pkpd.models import load_model

            model = load_model(args.model)
        ds = read_dataset(
            args.data,
            dose_unit=args.dose_unit,
            model=model,
            occasions=args.occasions,
            **data_options(args),
        )
    except DatasetError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:
        print(f"pkpd validate: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(ds.summary_text())
    if model is not None:
        from pkpd.inference.priors import PriorsError, load_priors
        from pkpd.models.predict import warn_concentration_scale

        try:
            typical = load_priors(model=model).typical()
        except (PriorsError, OSError, ValueError):
            typical = None  # no bundled priors: the check by body weight only
        with _PrintUnitWarnings():
            warn_concentration_scale(model, ds, typical)
    print("OK: no problems found")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from pkpd.data import DatasetError, read_dataset
    from pkpd.models import load_model
    from pkpd.models.predict import parse_params, predict_dataset

    try:
        check_outputs({"--out": args.out}, {"data": args.data})
        model = load_model(args.model)
        params = parse_params(args.params)
        ds = read_dataset(
            args.data,
            dose_unit=args.dose_unit,
            compartments=list(model.compartments),
            model=model,
            **data_options(args),
        )
        pred = predict_dataset(ds, model, params, allow_f_above_1=args.allow_f_above_1)
        table = ds.input_table().reset_index(drop=True)  # the reader's own split
    except DatasetError as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, OSError) as e:
        print(f"pkpd predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    table["PRED"] = pred
    try:
        atomic_write(args.out, lambda tmp: table.to_csv(tmp, index=False))
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
    from pkpd.data import DatasetError, read_dataset
    from pkpd.inference.fit import FitError, fit, save_fit
    from pkpd.inference.priors import PriorsError
    from pkpd.inference.summary import (
        convergence_warnings,
        format_table,
        parameter_table,
        parameterization_check_text,
    )
    from pkpd.models import load_model

    try:
        check_outputs(
            {"--out": args.out},
            {"data": args.data, "--priors": args.priors, "--aggregate": args.aggregate},
        )
        # read with the model's DVID codes and units (and --dvid, --dv-unit, --molar-mass)
        model = load_model(args.model)  # a model file runs once
        if args.data is None and args.aggregate is None:
            raise FitError("give the data (DATA.csv), published summaries (--aggregate), or both")
        ds = (
            None  # published summaries alone
            if args.data is None
            else read_dataset(
                args.data, model=model, occasions=args.occasions, **data_options(args)
            )
        )
        priors = args.priors
        if args.error or args.iov:
            from pkpd.inference.priors import load_priors

            priors = load_priors(args.priors, model=model)
            for endpoint, form in _parse_errors(args.error or []):
                priors = priors.with_residual(endpoint, form)
            for name, scale in _parse_iov(args.iov or []):
                priors = priors.with_iov(name, scale)
        with _PrintUnitWarnings():
            idata = fit(
                model,
                ds,
                priors,
                chains=args.chains,
                warmup=args.warmup,
                draws=args.draws,
                seed=args.seed,
                method=args.method,
                covariates=args.covariate or None,
                endpoints=args.endpoint or None,
                progress_bar=not args.quiet,
                parameterization=args.parameterization,
                mass_matrix=args.mass_matrix,
                target_accept=args.target_accept,
                aggregate=args.aggregate,
                aggregate_virtual=args.aggregate_virtual,
            )
    except (DatasetError, PriorsError, FitError) as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:
        print(f"pkpd fit: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        save_fit(idata, args.out)
    except (OSError, ValueError) as e:
        print(f"pkpd fit: cannot write {args.out}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    table = parameter_table(idata)
    print(f"model {idata.attrs['model']}: {args.method} fit written to {args.out}")
    if str(idata.attrs.get("priors_source", "")).startswith("the declarations of model"):
        print(f"priors: {idata.attrs['priors_source']} (stored in the fit; attribute priors_toml)")
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
    if args.method == "nuts":
        counts = json.loads(idata.attrs.get("centered_subjects", "{}"))
        n = idata.posterior.sizes.get("subject", 0)
        cen = [p if c == n else f"{p} ({c} of {n} subjects)" for p, c in counts.items() if c]
        print(f"subject effects ({idata.attrs.get('parameterization')}): centred "
              f"{', '.join(cen) or 'none'}; the others non-centred")  # fmt: skip
        check = parameterization_check_text(idata)
        if check:
            print(check)
    timing = json.loads(idata.attrs.get("timing_s", "{}"))
    if timing:
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timing.items()))
    print(format_table(table))
    warnings = convergence_warnings(idata, table) if args.method == "nuts" else []
    for w in warnings:
        print(f"WARNING: {w}")
    if args.method == "nuts" and not warnings:
        print("convergence: R-hat <= 1.01, bulk and tail ESS >= 400, no divergences")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    if args.devices > 1:
        import numpyro

        # host devices must be set before JAX starts its backend (nothing has touched it yet)
        numpyro.set_host_device_count(args.devices)
    from pkpd.inference.fit import FitError
    from pkpd.regimen import RegimenError
    from pkpd.simulate import (
        SimulationError,
        attainment,
        format_attainment,
        save_simulation,
        simulate,
        summarize,
    )

    try:
        out = Path(args.out)
        check_outputs(
            {"--out": out, "summary CSV": out.with_suffix(".csv"),
             "attainment CSV": out.with_name(out.stem + "_attainment.csv")},
            {"fit": args.fit, "--population": args.population},
        )  # fmt: skip
        if args.population and args.covariate:
            raise SimulationError("give either --population (a CSV table) or --covariate, not both")
        population = args.population
        if args.covariate:
            population = {}
            for item in args.covariate:
                name, eq, value = (x.strip() for x in item.partition("="))
                if not eq or not name or not value:
                    raise SimulationError(
                        f"--covariate {item!r}: expected NAME=VALUE, e.g. 'CYP3A4_INH=1' or "
                        "'BSA=normal(1.85, 0.2)'"
                    )
                try:
                    population[name] = float(value)
                except ValueError:
                    population[name] = value
        sim = simulate(
            args.fit,
            args.regimen,
            population=population,
            n_subjects=args.subjects,
            n_draws=args.draws,
            times=_parse_times(args.times, args.max_times),
            seed=args.seed,
            study=args.study,
            endpoints=args.endpoint or None,
            horizon_h=args.horizon_h,
            chunk_size=args.chunk_size,
            engine=args.engine,
            progress_bar=not args.quiet,
            typical=args.typical,
            occasions=args.occasions,
        )
        targets = list(args.target or [])
        default_target = not targets and "s6k_inhibition_trough_ss" in sim
        if default_target:
            targets = ["s6k_inhibition_trough_ss >= 80"]
        table = attainment(sim, targets) if targets else None
        written = save_simulation(sim, args.out, targets=targets or None)
    except (SimulationError, RegimenError, FitError) as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"pkpd simulate: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"model {sim.attrs['model']}: {sim.sizes['regimen']} regimen(s) x {sim.sizes['draw']} "
        f"posterior draws x {sim.sizes['subject']} virtual subjects, horizon "
        f"{sim.attrs['horizon_h']:g} h, study: {sim.attrs['study']}; written to "
        + ", ".join(str(p) for p in written.values())
    )
    print("regimens as read (check the dose table is the one you meant):")
    for label, text in zip(sim["regimen"].values, sim["regimen_description"].values, strict=True):
        print(f"  {label}: {text}")
    summ = summarize(sim)
    key = [
        m
        for m in summ["metric"].unique()
        if (m.endswith("_ss") and "total" not in m) or "change" in m
    ]
    print("median [90% interval] over draws and subjects (_ss: the last dosing interval):")
    for label, part in summ[summ["metric"].isin(key)].groupby("regimen", sort=False):
        print(f"  {label}")
        for _, r in part.iterrows():
            print(f"    {r['metric']:<28} {r['median']:10.4g} [{r['low']:.4g}, {r['high']:.4g}] "
                  f"{r['units']}")  # fmt: skip
    if table is not None:
        if default_target:
            print("probability of target attainment (default target; choose with --target):")
        print(format_attainment(table))
    return 0


#: Most profile times ``pkpd simulate --times`` accepts unless ``--max-times`` raises it.
MAX_TIMES = 100_000


def _parse_times(text, max_times=MAX_TIMES):
    """``None``, ``"0:2016:24"`` (start:stop:step, h, stop included) or ``"0,24,168"``.

    Times must be finite and not negative; more than ``max_times`` of them is an error (a
    typo such as ``0:2016:0.0001`` would otherwise fill the memory).
    """
    if text is None:
        return None
    import math

    import numpy as np

    from pkpd.simulate import SimulationError

    def bad(why):
        return SimulationError(
            f"--times {text!r}: {why}; expected START:STOP:STEP (h), e.g. 0:2016:24, or a list "
            "0,24,168"
        )

    try:
        if ":" in text:
            start, stop, step = (float(x) for x in text.split(":"))
            values = [start, stop, step]
        else:
            values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise bad("not numbers") from None
    if not values:
        raise bad("no time given")
    if not all(math.isfinite(v) for v in values):
        raise bad("times must be finite numbers")
    if ":" in text:
        if step <= 0 or stop < start:
            raise bad("STEP must be > 0 and STOP >= START")
        n = math.floor((stop - start) / step + 0.5) + 1
        if n > max_times:
            raise bad(f"{n:,} time points, more than the limit of {max_times:,} (raise it with "
                      "--max-times)")  # fmt: skip
        times = start + step * np.arange(n)
    else:
        if len(values) > max_times:
            raise bad(f"{len(values):,} time points, more than the limit of {max_times:,} "
                      "(raise it with --max-times)")  # fmt: skip
        times = values
    if min(times) < 0:
        raise bad("times must be >= 0 h (time after the first dose)")
    return times


def _add_simulate_parser(sub) -> None:
    s = sub.add_parser(
        "simulate",
        help="simulate dose regimens from a fit's posterior: exposures, PD metrics, probability "
        "of target attainment",
    )
    s.add_argument("fit", help="fit file (netCDF from `pkpd fit`)")
    s.add_argument(
        "--regimen",
        action="append",
        required=True,
        help='dosing regimen (repeat to compare), e.g. "25 mg q1w x12 over 30 min", '
        '"175 mg q1w x3 then 75 mg q1w x9 over 30 min", "15 mg/m2 q1w x12, hold week 5"',
    )
    s.add_argument(
        "--subjects", type=_positive_int, default=None, help="virtual subjects (default 100)"
    )
    s.add_argument(
        "--draws", type=_positive_int, default=100, help="posterior draws used (default 100)"
    )
    s.add_argument("--seed", type=_nonnegative_int, default=0)
    s.add_argument(
        "--study",
        default=None,
        help="'new' (a new study effect per draw), a fitted study's name, or omitted (the "
        "typical study, no study effect)",
    )
    s.add_argument("--endpoint", action="append", help="endpoint to simulate (repeat)")
    s.add_argument("--population", default=None, help="CSV table of virtual subjects' covariates")
    s.add_argument(
        "--typical",
        action="store_true",
        help="one typical subject: covariates at the effects' references (others at the fitted "
        "median), no between-subject effects; the spread is parameter uncertainty only",
    )
    s.add_argument(
        "--occasions",
        default="dose",
        metavar="RULE",
        help="for a fit with inter-occasion variability: where the virtual subjects' occasions "
        "start, 'dose' (each dose; default) or 'every N h|d|w' from the first dose; each "
        "occasion draws a new occasion effect",
    )
    s.add_argument(
        "--covariate",
        action="append",
        help="covariate of the virtual subjects (repeat): NAME=VALUE or NAME=DISTRIBUTION, e.g. "
        "'CYP3A4_INH=1', 'BSA=normal(1.85, 0.2)', 'CYP3A4_INH=bernoulli(0.15)'; the others are "
        "resampled from the fitted data",
    )
    s.add_argument(
        "--target",
        action="append",
        help="target for the attainment table (repeat), e.g. 's6k_inhibition_trough_ss >= 80', "
        "'auc_tau_sirolimus_ss <= 3000'; default for temsirolimus: S6K inhibition >= 80%%",
    )
    s.add_argument("--times", default=None, help="profile times (h): START:STOP:STEP or a list")
    s.add_argument(
        "--max-times",
        type=_positive_int,
        default=MAX_TIMES,
        help=f"most profile times accepted (default {MAX_TIMES:,})",
    )
    s.add_argument("--horizon-h", type=float, default=None, help="simulated time (h)")
    s.add_argument(
        "--chunk-size", type=_positive_int, default=2048, help="(draw, subject) pairs per call"
    )
    s.add_argument("--engine", choices=["auto", "modal", "predict"], default="auto")
    s.add_argument(
        "--devices", type=_positive_int, default=1, help="CPU host devices to spread over"
    )
    s.add_argument(
        "--out",
        required=True,
        help="output netCDF; summaries go to <out>.csv and <out>_attainment.csv",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=_simulate)


def _report(args: argparse.Namespace) -> int:
    from pkpd.inference.fit import FitError, load_fit
    from pkpd.report import report

    try:
        check_outputs({"--out": args.out}, {"fit": args.fit, "--sim": args.sim})
        fit = load_fit(args.fit)
        sim = None
        if args.sim:
            from pkpd.simulate import load_simulation
            from pkpd.simulate.targets import metric_names, parse_target

            sim = load_simulation(args.sim)
            for t in args.target or []:
                parse_target(t, metric_names(sim))
        elif args.target:
            raise ValueError("--target needs a simulation (--sim SIM.nc)")
        progress = None if args.quiet else (lambda m: print(f"  {m}", flush=True))
        path = report(
            fit,
            sim,
            args.out,
            n_replicates=args.replicates,
            seed=args.seed,
            targets=args.target or None,
            vpc_x=args.x,
            progress=progress,
        )
    except (FitError, ValueError) as e:  # SimulationError is a ValueError
        print(f"pkpd report: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"pkpd report: cannot write {args.out}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"report written to {path} (self-contained HTML: open it in any browser)")
    if sim is None:
        print("no simulation given: the report's simulation section is absent (--sim SIM.nc)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from pkpd.report.demo import run_demo

    check_output_folder(args.out)
    files = run_demo(args.out, quick=args.quick)
    print(f"pkpd demo done. Report: {files['report'].resolve()}")
    return 0


def _add_report_parsers(sub) -> None:
    r = sub.add_parser(
        "report",
        help="write one self-contained HTML report of a fit (and a simulation): tables, "
        "goodness of fit, VPCs, priors, dose simulation and target attainment",
    )
    r.add_argument("fit", help="fit file (netCDF from `pkpd fit`)")
    r.add_argument("--sim", default=None, help="simulation file (netCDF from `pkpd simulate`)")
    r.add_argument("--out", required=True, help="output HTML file, e.g. REPORT.html")
    r.add_argument(
        "--target",
        action="append",
        help="target-attainment criterion (repeat), e.g. 's6k_inhibition_trough_ss >= 80'",
    )
    r.add_argument(
        "--replicates",
        type=_positive_int,
        default=200,
        help="replicates of the trial for VPCs and NPDE",
    )
    r.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the replicates")
    r.add_argument(
        "--x",
        choices=["auto", "time", "tad"],
        default="auto",
        help="time axis of VPCs: time, time after dose, or auto (per endpoint, the better one)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    r.set_defaults(func=_report)
    d = sub.add_parser(
        "demo",
        help="run validate -> fit -> simulate -> report on the bundled data (a few minutes)",
    )
    d.add_argument("--out", default="pkpd_demo", help="output folder (default pkpd_demo)")
    d.add_argument(
        "--quick", action="store_true", help="much smaller settings: a smoke test (MAP fit)"
    )
    d.set_defaults(func=_demo)
    pp = sub.add_parser(
        "priors",
        help="write a model's priors file: pkpd's bundled one, the model's declared priors, or "
        "a template to fill in",
    )
    pp.add_argument("--model", required=True, help="registered model name or FILE.py")
    pp.add_argument("--out", required=True, help="priors file to write (TOML)")
    pp.set_defaults(func=_priors)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pkpd", description="Population PK/PD modelling: validate, fit, simulate, report."
    )
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check a NONMEM-style dataset and summarise it")
    v.add_argument("data", help="CSV file (NONMEM-style)")
    v.add_argument(
        "--model",
        default=None,
        help="the model the data are for: its DVID codes and endpoint units are used, and the "
        "data's concentration scale is checked against its priors; default: pkpd's "
        "temsirolimus codes (DVID 1-5), which the summary names",
    )
    v.add_argument(
        "--dose-unit",
        default="mg",
        choices=["mg", "mg/m2"],
        help="unit of AMT where the data have no AMTU column (default mg)",
    )
    _add_occasions_option(v)
    _add_data_options(v)
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
        "--allow-f-above-1",
        action="store_true",
        help="accept bioavailability parameters f_<cmt> > 1 (a relative F); by default F must be "
        "in [0, 1]",
    )
    pr.add_argument(
        "--dose-unit",
        default="mg",
        choices=["mg", "mg/m2"],
        help="unit of AMT where the data have no AMTU column (default mg)",
    )
    _add_data_options(pr)
    pr.set_defaults(func=_predict)
    f = sub.add_parser("fit", help="fit a population model (NumPyro NUTS) and save it as netCDF")
    f.add_argument(
        "data",
        nargs="?",
        default=None,
        help="CSV file (NONMEM-style); may be left out with --aggregate (published summaries alone)",
    )
    f.add_argument("--model", required=True, help="model name: temsirolimus, one_cmt_oral, ...")
    f.add_argument("--priors", default=None, help="priors TOML (default: priors/<model>.toml)")
    f.add_argument("--chains", type=_positive_int, default=4)
    f.add_argument("--warmup", type=_nonnegative_int, default=500)
    f.add_argument("--draws", type=_positive_int, default=500)
    f.add_argument("--seed", type=_nonnegative_int, default=0)
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
        choices=["auto", "centered", "noncentered"],
        default="auto",
        help="of the subject effects in NUTS: auto (default: centred for the parameters the "
        "data inform well, non-centred for the others, chosen at the MAP), centered (rich "
        "data) or noncentered (sparse data)",
    )
    f.add_argument(
        "--mass-matrix",
        choices=["diagonal", "dense-population", "dense"],
        default="diagonal",
        help="NUTS mass matrix: diagonal (default), one dense block over the population-level "
        "parameters, or dense over everything (small models only)",
    )
    f.add_argument(
        "--endpoint",
        action="append",
        help="endpoint to fit (repeat), e.g. --endpoint temsirolimus --endpoint sirolimus; "
        "default: every endpoint in the data",
    )
    f.add_argument(
        "--aggregate",
        default=None,
        metavar="ARMS.csv",
        help="published arm-level summaries fitted with the data (mean Cmax, AUC, ... per arm; "
        "format: pkpd.data.aggregate)",
    )
    f.add_argument(
        "--aggregate-virtual",
        type=_positive_int,
        default=None,
        metavar="M",
        help="virtual subjects simulated per arm of --aggregate (default: 25 x the largest N, "
        "at least 200)",
    )
    _add_data_options(f)
    _add_occasions_option(f)
    f.add_argument(
        "--iov",
        action="append",
        metavar="PARAM[=SCALE]",
        help="inter-occasion variability on a parameter (repeat or comma-separate): its occasion "
        "SD gets a half-normal prior of that scale (default 0.3; overrides the priors file's "
        "iov); the data need occasions (OCC column or --occasions)",
    )
    f.add_argument(
        "--error",
        action="append",
        help="residual error model of an endpoint (repeat), e.g. conc=proportional: additive, "
        "proportional, combined, lognormal or logit; the priors file's priors of the terms are "
        "kept (default: the priors file's model)",
    )
    f.add_argument(
        "--target-accept",
        type=_target_accept,
        default=0.8,
        help="NUTS's target acceptance probability (default 0.8; raise it, e.g. 0.9, when there "
        "are divergent transitions)",
    )
    f.add_argument("--out", required=True, help="output netCDF (ArviZ InferenceData)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=_fit)
    _add_simulate_parser(sub)
    _add_report_parsers(sub)
    _add_sbc_parser(sub)
    return p


def _add_sbc_parser(sub) -> None:
    c = sub.add_parser(
        "sbc",
        help="simulation-based calibration: fit data simulated from the priors on a design, "
        "many times, and test that the true values' ranks are uniform",
    )
    c.add_argument("--model", required=True, help="registered model name or FILE.py")
    c.add_argument("--design", required=True, help="CSV whose doses, times, covariates and "
                   "LLOQs are kept (its DV values are ignored)")  # fmt: skip
    c.add_argument("--priors", default=None, help="priors TOML (default: the model's)")
    c.add_argument("--n", type=_positive_int, default=100, help="replicates (default 100)")
    c.add_argument("--chains", type=_positive_int, default=2)
    c.add_argument("--warmup", type=_nonnegative_int, default=250)
    c.add_argument("--draws", type=_positive_int, default=250)
    c.add_argument("--ranks", type=_positive_int, default=99,
                   help="posterior draws each rank counts (thinned evenly; default 99)")  # fmt: skip
    c.add_argument("--seed", type=_nonnegative_int, default=0)
    c.add_argument("--method", choices=["nuts", "map"], default="nuts")
    c.add_argument("--parameterization", choices=["auto", "centered", "noncentered"],
                   default="auto")  # fmt: skip
    c.add_argument("--subjects", type=_nonnegative_int, default=3,
                   help="test quantities: individual parameters of the first N subjects")  # fmt: skip
    c.add_argument("--out", default=None, help="SBC result (netCDF); replicates are kept in "
                   "OUT.replicates/ as they finish, and a rerun resumes from them")  # fmt: skip
    c.add_argument("--report", default=None, help="HTML page of the result (ECDF plots)")
    c.add_argument("--workers", type=_positive_int, default=1,
                   help="replicates fitted at once, each in its own process (default 1)")  # fmt: skip
    c.add_argument("--batch", type=_positive_int, default=None,
                   help="run N replicates at once in one vectorised NUTS program (plain NUTS, "
                   "no MAP start: needs --parameterization noncentered or centered and a design "
                   "without LLOQs); faster on small models")  # fmt: skip
    c.add_argument("--prior-check", action="store_true",
                   help="only simulate --n datasets from the priors and print what they look "
                   "like (no fit): check the priors generate plausible data first")  # fmt: skip
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    c.set_defaults(func=_sbc)


def _sbc(args: argparse.Namespace) -> int:
    from pkpd.data import DatasetError, read_dataset
    from pkpd.inference.fit import FitError
    from pkpd.inference.priors import PriorsError
    from pkpd.inference.sbc import SBCError, prior_predictive, prior_predictive_table, sbc
    from pkpd.models import load_model

    try:
        if args.prior_check:
            if args.out or args.report:
                raise ValueError("--prior-check writes nothing: drop --out/--report")
        elif not (args.out or args.report):
            raise ValueError("give --out SBC.nc and/or --report SBC.html")
        outputs = {k: v for k, v in (("--out", args.out), ("--report", args.report)) if v}
        check_outputs(outputs, {"--design": args.design, "--priors": args.priors})
        model = load_model(args.model)
        ds = read_dataset(args.design, model=model)
        if args.prior_check:
            pp = prior_predictive(model, ds, args.priors, n=args.n, seed=args.seed)
            table = prior_predictive_table(pp)
            with pd_options():
                print(table.to_string(index=False))
            return 0
        result = sbc(
            model,
            ds,
            args.priors,
            n=args.n,
            chains=args.chains,
            warmup=args.warmup,
            draws=args.draws,
            ranks=args.ranks,
            seed=args.seed,
            method=args.method,
            parameterization=args.parameterization,
            subjects=args.subjects,
            out=args.out,
            workers=args.workers,
            batch=args.batch,
            progress=not args.quiet,
        )
    except (DatasetError, PriorsError, FitError, SBCError) as e:
        print(str(e), file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValueError as e:
        print(f"pkpd sbc: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from pkpd.diagnostics.sbc import sbc_table

    with pd_options():
        print(sbc_table(result).to_string(index=False))
    if args.report:
        from pkpd.report.sbc import sbc_report

        sbc_report(result, args.report)
        print(f"report: {args.report}")
    if args.out:
        print(f"SBC result written to {args.out}")
    return 0


def pd_options():
    import pandas as pd

    return pd.option_context("display.width", 160, "display.max_columns", 20,
                             "display.float_format", "{:.4g}".format)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func.__name__ in ("_fit", "_simulate", "_report", "_demo", "_sbc"):
        from pkpd._xla import enable_compilation_cache

        enable_compilation_cache()
    try:
        return args.func(args)
    except OutputError as e:
        print(f"pkpd {args.command}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Outputs are written atomically: an interrupted command leaves no partial file.
        print(f"pkpd {args.command}: interrupted; no partial output was written",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
