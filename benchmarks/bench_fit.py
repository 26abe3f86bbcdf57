"""NUTS fits side by side: pkpd vs Stan (pystan), minimum bulk ESS per second (issue 9 a, b).

Problems (``--problems``):

``oral12``, ``oral100``, ``oral1000``
    hierarchical one-compartment oral model (lognormal BSV on cl, v, ka; proportional error)
    on data simulated by ``benchmarks/simdata.py`` (12, 100, 1000 subjects; 100 mg q12h x 4,
    10 samples each); priors ``benchmarks/priors_one_cmt_oral_prop.toml``; Stan program
    ``benchmarks/stan/one_cmt_oral.stan``.
``temsirolimus``
    temsirolimus -> sirolimus PK (both analytes; BSV on cl, v1, v2, cl_sir, v_sir; fm fixed;
    proportional error) on the phase II study (PH2) of the bundled synthetic dataset; priors
    ``benchmarks/priors_temsirolimus_pk.toml``; Stan program
    ``benchmarks/stan/temsirolimus_pk.stan``.
    BLQ observations are censored (M3) on both sides.
``temsirolimus_class``
    the same problem, pkpd fitting the hand-wired ``TemsirolimusModel`` instead of the
    registered model (written with the public blocks): ``--problems
    temsirolimus,temsirolimus_class --sides pkpd`` compares the two in one run.

Both sides get the same data file, the same priors file, the same chains/warmup/draws and the
same parameterisation of the subject effects (``--parameterization``: pkpd.fit's default unless
given; the Stan programs switch between centred and non-centred by a data flag). For
each side: compile time, run time without it, minimum bulk ESS over the population parameters
(``pop_<param>``, ``arviz.ess``), ESS per second with and without compile time; then the ratios
pkpd/Stan. Medians over ``--repeats`` (seeds ``--seed``, ``--seed`` + 1, ...).

How compile time is measured:

* Stan: the wall time of ``stan.build`` after deleting httpstan's cached build of the program
  (a real C++ compile; once per program and run; ``--reuse-stan-build`` skips the deletion).
  Sampling: the wall time of ``posterior.sample`` (all chains; httpstan runs them in parallel
  worker processes). Stan runs in a child process (``benchmarks/stan_side.py``) because httpstan
  forks, and forking this process after JAX started its threads could deadlock.
* pkpd: the time of the whole ``pkpd.fit`` call; its compile part is the union of the time
  intervals that JAX itself reports (``jax.monitoring`` time spans of jaxpr tracing, lowering
  to MLIR and XLA backend compilation) during the call. Everything else (data layout, the MAP
  start, NUTS, the output) counts as run time.

Initial values: pkpd starts its chains from its own MAP estimate (part of its timed run);
Stan from values near the prior medians, jittered per chain (``--stan-init prior``; ``random``
gives Stan's default uniform(-2, 2) on the unconstrained scale, from which the chains of the
12-subject one-compartment problem had not mixed after 100 warmup iterations, R-hat 1.8).

Chains: pkpd runs chains in parallel over host devices, which exist only if
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` is set before JAX starts; this script
sets it (N = ``--chains``) before importing JAX or pkpd.

    .venv/bin/python benchmarks/bench_fit.py --problems oral12 --warmup 100 --draws 100
    .venv/bin/python benchmarks/bench_fit.py            # all problems, 4 x (500 + 500), 1 repeat
"""

from __future__ import annotations

import argparse
import os
import sys


def _cli() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="pkpd vs Stan: NUTS minimum bulk ESS per second, side by side"
    )
    ap.add_argument(
        "--problems",
        default="oral12,oral100,oral1000,temsirolimus",
        help="comma-separated: oral12, oral100, oral1000, oral<N>, temsirolimus",
    )
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="runs per problem; medians reported")
    ap.add_argument("--sides", default="stan,pkpd", help="stan,pkpd (default), stan or pkpd")
    ap.add_argument(
        "--outdir", default=None, help="where the data files go (default: a temporary folder)"
    )
    ap.add_argument("--json", default=None, help="also write every measurement to this file")
    ap.add_argument(
        "--reuse-stan-build",
        action="store_true",
        help="use httpstan's cached build when there is one (compile time then near 0)",
    )
    ap.add_argument(
        "--stan-init",
        choices=("prior", "random"),
        default="prior",
        help="prior: near the prior medians (stan_side.prior_inits); random: Stan's default",
    )
    ap.add_argument(
        "--parameterization",
        choices=("pkpd-default", "centered", "noncentered"),
        default="pkpd-default",
        help="of the subject effects, the same on both sides (default: pkpd.fit's default)",
    )
    return ap


def _set_host_devices(argv) -> None:
    """XLA_FLAGS with one host device per chain: must happen before JAX is imported."""
    chains = _cli().parse_known_args(argv)[0].chains
    flag = f"--xla_force_host_platform_device_count={chains}"
    old = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in old:
        os.environ["XLA_FLAGS"] = (old + " " + flag).strip()


if __name__ == "__main__":
    _set_host_devices(sys.argv[1:])

import datetime as _dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import simdata  # noqa: E402
import stan_side  # noqa: E402

PRIORS, TEMSIROLIMUS_CSV = stan_side.PRIORS, stan_side.TEMSIROLIMUS_CSV
#: JAX's own compile-phase events (jax/_src/dispatch.py).
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


# ---------------------------------------------------------------------------------------------
# Problems


def make_problem(name: str, outdir: Path) -> dict:
    """Data file, Stan data and pkpd arguments of one benchmark problem."""
    if name.startswith("oral"):
        n = int(name[4:])
        path = simdata.write(n, outdir)
        sp = stan_side.one_cmt_oral_data(path, PRIORS["one_cmt_oral"])
        return dict(
            name=name,
            description=f"one_cmt_oral, {n} simulated subjects",
            path=path,
            stan=sp,
            model="one_cmt_oral",
            priors=PRIORS["one_cmt_oral"],
            endpoints=None,
        )
    if name == "temsirolimus_class":
        from pkpd.models.temsirolimus import TemsirolimusModel

        prob = make_problem("temsirolimus", outdir)
        return dict(prob, name=name, model=TemsirolimusModel(),
                    description=prob["description"] + ", the hand-wired class")  # fmt: skip
    if name == "temsirolimus":
        df = stan_side.read_nonmem(TEMSIROLIMUS_CSV)
        df = df[df["STUDY"] == "PH2"]
        path = outdir / "temsirolimus_PH2.csv"
        df.to_csv(path, index=False, na_rep=".")
        pk = df[df["DVID"].isna() | df["DVID"].isin(list(stan_side.TEM_DVID))]
        sp = stan_side.temsirolimus_pk_data(pk, PRIORS["temsirolimus_pk"])
        return dict(
            name=name,
            description=f"temsirolimus PK (PH2), {sp.n_subjects} subjects",
            path=path,
            stan=sp,
            model="temsirolimus",
            priors=PRIORS["temsirolimus_pk"],
            endpoints=["temsirolimus", "sirolimus"],
        )
    raise SystemExit(f"unknown problem {name!r}; expected oral<N> (e.g. oral12) or temsirolimus")


# ---------------------------------------------------------------------------------------------
# Measurements


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling, from its own monitoring events.

    Nested spans (a jit traced inside another) and spans on other threads are merged: the
    result is the length of the union of the reported intervals inside the window.
    """

    _spans: list[tuple[float, float]] = []
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        import jax.monitoring

        def on_span(event, start, end, **kwargs):
            if event in _COMPILE_EVENTS:
                cls._spans.append((start, end))

        jax.monitoring.register_event_time_span_listener(on_span)
        cls._installed = True

    def __enter__(self):
        self.install()
        self.start = time.time()
        return self

    def __exit__(self, *exc):
        self.end = time.time()
        spans = sorted(
            (max(a, self.start), min(b, self.end))
            for a, b in self._spans
            if b > self.start and a < self.end
        )
        total, cur_a, cur_b = 0.0, None, None
        for a, b in spans:
            if cur_b is None or a > cur_b:
                if cur_b is not None:
                    total += cur_b - cur_a
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        if cur_b is not None:
            total += cur_b - cur_a
        self.seconds = total
        return False


def ess_summary(draws: dict[str, np.ndarray]) -> dict:
    """Minimum bulk ESS (and which parameter) and maximum R-hat over ``[chain, draw]`` arrays."""
    import arviz as az

    ds = az.convert_to_dataset({k: np.asarray(v, dtype=float) for k, v in draws.items()})
    ess = az.ess(ds, method="bulk")
    rhat = az.rhat(ds)
    vals = {k: float(ess[k]) for k in draws}
    worst = min(vals, key=vals.get)
    return {
        "min_ess": vals[worst],
        "min_ess_param": worst,
        "max_rhat": max(float(rhat[k]) for k in draws),
        "medians": {k: float(np.median(v)) for k, v in draws.items()},
    }


def run_stan_side(prob, args, seed, fresh) -> dict:
    sp = prob["stan"]
    outputs = [f"pop_{p}" for p in sp.pop_params]
    res = stan_side.run_stan(
        {
            "program": sp.program,
            "data": {**sp.data, "centered": int(args.parameterization == "centered")},
            "mode": "sample",
            "chains": args.chains,
            "warmup": args.warmup,
            "draws": args.draws,
            "seed": seed,
            "fresh_compile": fresh,
            "outputs": outputs,
            "init": stan_side.prior_inits(sp, args.chains, seed)
            if args.stan_init == "prior"
            else None,
        }
    )
    out = ess_summary({k: res[k] for k in outputs})
    out.update(
        compile_s=res["compile_s"],
        run_s=res["sample_s"],
        cached_build=bool(res["cached_build"]),
        divergences=int(res["stat_divergent"].sum()),
        leapfrog_per_draw=float(res["stat_n_leapfrog"].mean()),
        stan_elapsed=res.get("stan_elapsed"),
    )
    return out


def run_pkpd_side(prob, args, seed) -> dict:
    import pkpd

    kw = dict(
        priors=prob["priors"],
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        seed=seed,
        progress_bar=False,
        endpoints=prob["endpoints"],
    )
    if args.parameterization_supported:
        kw["parameterization"] = args.parameterization
    with CompileClock() as clock:
        t0 = time.perf_counter()
        idata = pkpd.fit(prob["model"], str(prob["path"]), **kw)
        total = time.perf_counter() - t0
    pops = [f"pop_{p}" for p in prob["stan"].pop_params]
    post = idata.posterior
    out = ess_summary({k: post[k].values for k in pops})
    n_obs = int(idata.observed_data["y"].size)
    n_blq = int(idata.constant_data["obs_blq"].values.sum())
    if (n_obs, n_blq) != (prob["stan"].n_obs, prob["stan"].n_blq):  # same data on both sides
        raise RuntimeError(
            f"{prob['name']}: pkpd fitted {n_obs} observations ({n_blq} BLQ), Stan "
            f"{prob['stan'].n_obs} ({prob['stan'].n_blq} BLQ); the two sides disagree on the data"
        )
    ss = idata.sample_stats
    out.update(
        compile_s=clock.seconds,
        run_s=total - clock.seconds,
        total_s=total,
        divergences=int(ss["diverging"].values.sum()) if "diverging" in ss else -1,
        leapfrog_per_draw=float(ss["n_steps"].values.mean()) if "n_steps" in ss else float("nan"),
        parameterization=str(idata.attrs.get("parameterization", "")),
    )
    return out


def _median(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")


def summarise(runs: list[dict], compile_s: float) -> dict:
    """Medians over repeats; ESS/s with and without compile time."""
    ess = _median(runs, "min_ess")
    run_s = _median(runs, "run_s")
    per_run = [
        (r["min_ess"] / r["run_s"], r["min_ess"] / (r["run_s"] + compile_s_of(r, compile_s)))
        for r in runs
    ]
    return {
        "compile_s": statistics.median(compile_s_of(r, compile_s) for r in runs),
        "run_s": run_s,
        "min_ess": ess,
        "ess_per_s": statistics.median(x for x, _ in per_run),
        "ess_per_s_with_compile": statistics.median(y for _, y in per_run),
        "divergences": _median(runs, "divergences"),
        "leapfrog_per_draw": _median(runs, "leapfrog_per_draw"),
        "max_rhat": max(r["max_rhat"] for r in runs),
        "min_ess_param": runs[0]["min_ess_param"],
    }


def compile_s_of(run, default):
    """pkpd pays compilation on every call; Stan once per program (the first, fresh build)."""
    return run["compile_s"] if "total_s" in run else default


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(x):
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.2f}" if abs(x) < 10 else f"{x:,.1f}"


def print_table(rows: list[dict]) -> None:
    head = (
        "| problem | side | compile s | run s | min bulk ESS (param) | ESS/s | ESS/s incl. compile "
        "| div | leapfrog/draw | max R-hat |"
    )
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for r in rows:
        for side in ("stan", "pkpd"):
            s = r.get(side)
            if not s:
                continue
            print(
                f"| {r['problem']} | {side} | {_fmt(s['compile_s'])} | {_fmt(s['run_s'])} | "
                f"{s['min_ess']:.0f} ({s['min_ess_param']}) | {_fmt(s['ess_per_s'])} | "
                f"{_fmt(s['ess_per_s_with_compile'])} | {s['divergences']:.0f} | "
                f"{s['leapfrog_per_draw']:.1f} | {s['max_rhat']:.3f} |"
            )
        if r.get("stan") and r.get("pkpd"):
            p, s = r["pkpd"], r["stan"]
            print(
                f"| {r['problem']} | **pkpd/Stan** | {p['compile_s'] / s['compile_s']:.2f}x | "
                f"{p['run_s'] / s['run_s']:.2f}x | {p['min_ess'] / s['min_ess']:.2f}x | "
                f"**{p['ess_per_s'] / s['ess_per_s']:.2f}x** | "
                f"**{p['ess_per_s_with_compile'] / s['ess_per_s_with_compile']:.2f}x** | | "
                f"{p['leapfrog_per_draw'] / s['leapfrog_per_draw']:.2f}x | |"
            )


def print_medians(rows: list[dict]) -> None:
    print("\nposterior medians of the population parameters (first repeat), pkpd vs Stan:")
    for r in rows:
        if not (r.get("stan_runs") and r.get("pkpd_runs")):
            continue
        ms, mp = r["stan_runs"][0]["medians"], r["pkpd_runs"][0]["medians"]
        parts = [f"{k[4:]} {mp[k]:.4g}/{ms[k]:.4g}" for k in ms]
        print(f"  {r['problem']}: " + ", ".join(parts))


def resolve_parameterization(args, pkpd) -> None:
    """Sets ``args.parameterization`` (pkpd's default resolved) and whether pkpd.fit takes it."""
    import inspect

    par = inspect.signature(pkpd.fit).parameters.get("parameterization")
    args.parameterization_supported = par is not None
    if args.parameterization == "pkpd-default":
        args.parameterization = par.default if par is not None else "noncentered"
        if args.parameterization == "auto":
            # the Stan programs switch all subject effects at once; on these rich PK data
            # pkpd's "auto" centres every one (its choice is printed per run)
            args.parameterization = "centered"
    elif par is None and args.parameterization != "noncentered":
        raise SystemExit("this pkpd.fit has no parameterization option (non-centred only)")


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _cli().parse_args(argv)
    sides = {s.strip() for s in args.sides.split(",") if s.strip()}
    if not sides <= {"stan", "pkpd"} or not sides:
        raise SystemExit("--sides: stan, pkpd or stan,pkpd")
    import jax

    if "pkpd" in sides:
        CompileClock.install()
    tmp = None
    if args.outdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="pkpd_bench_")
        outdir = Path(tmp.name)
    else:
        outdir = Path(args.outdir)
        outdir.mkdir(parents=True, exist_ok=True)
    import arviz
    import numpyro

    import pkpd

    resolve_parameterization(args, pkpd)
    print(f"# pkpd vs Stan, NUTS fits side by side ({_dt.datetime.now():%Y-%m-%d %H:%M})")
    print(f"machine: {machine()}")
    print(
        f"pkpd {pkpd.__version__}, jax {jax.__version__}, numpyro {numpyro.__version__}, "
        f"arviz {arviz.__version__}; pystan via httpstan (Stan 2.35); "
        f"{len(jax.devices())} JAX host devices (XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})"
    )
    print(
        f"command: benchmarks/bench_fit.py {' '.join(argv)}\n"
        f"settings: {args.chains} chains x ({args.warmup} warmup + {args.draws} draws), "
        f"seeds {args.seed}..{args.seed + args.repeats - 1}, data in {outdir}"
    )
    print(
        f"subject effects: {args.parameterization} on both sides"
        + ("" if args.parameterization_supported else " (pkpd.fit has no parameterization option)")
    )
    print(
        "compile time: Stan = stan.build of a fresh (uncached) program, once per program; "
        "pkpd = union of JAX's trace/lower/compile time spans (jax.monitoring) inside each "
        "pkpd.fit call. Inits: Stan "
        + (
            "near the prior medians (jittered per chain)"
            if args.stan_init == "prior"
            else "Stan's default (uniform(-2, 2) unconstrained)"
        )
        + ", pkpd its own MAP start (timed as run time)."
    )
    rows = []
    for name in [p.strip() for p in args.problems.split(",") if p.strip()]:
        prob = make_problem(name, outdir)
        sp = prob["stan"]
        print(
            f"\n## {name}: {prob['description']}, {sp.n_obs} observations, {sp.n_blq} BLQ "
            f"(censored, M3, on both sides); data {prob['path'].name}, priors "
            f"{prob['priors'].name}"
        )
        row = {"problem": name, "stan_runs": [], "pkpd_runs": []}
        stan_compile = None
        for r in range(args.repeats):
            seed = args.seed + r
            if "stan" in sides:
                fresh = (r == 0) and not args.reuse_stan_build
                s = run_stan_side(prob, args, seed, fresh)
                if stan_compile is None:
                    stan_compile = s["compile_s"]
                row["stan_runs"].append(s)
                print(
                    f"  stan  seed {seed}: build {s['compile_s']:.1f} s"
                    f"{' (cached)' if s['cached_build'] else ''}, sample {s['run_s']:.1f} s, "
                    f"min ESS {s['min_ess']:.0f} ({s['min_ess_param']}), "
                    f"{s['divergences']} divergences, {s['leapfrog_per_draw']:.1f} leapfrog/draw"
                )
            if "pkpd" in sides:
                try:
                    p = run_pkpd_side(prob, args, seed)
                except Exception as e:  # report, do not hide: pkpd is under active work
                    print(f"  pkpd  seed {seed}: FAILED: {type(e).__name__}: {e}")
                    row["pkpd_error"] = f"{type(e).__name__}: {e}"
                    continue
                row["pkpd_runs"].append(p)
                print(
                    f"  pkpd  seed {seed}: fit {p['total_s']:.1f} s "
                    f"(compile {p['compile_s']:.1f} s, run {p['run_s']:.1f} s), "
                    f"min ESS {p['min_ess']:.0f} ({p['min_ess_param']}), "
                    f"{p['divergences']} divergences, {p['leapfrog_per_draw']:.1f} leapfrog/draw"
                    f"{', ' + p['parameterization'] if p['parameterization'] else ''}"
                )
        if row["stan_runs"]:
            row["stan"] = summarise(row["stan_runs"], stan_compile)
        if row["pkpd_runs"]:
            row["pkpd"] = summarise(row["pkpd_runs"], 0.0)
        rows.append(row)

    print(f"\n## Results (medians over {args.repeats} repeat(s))\n")
    print_table(rows)
    print_medians(rows)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"argv": argv, "machine": machine(), "rows": rows},
                indent=1,
                default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o),
            )
        )
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
