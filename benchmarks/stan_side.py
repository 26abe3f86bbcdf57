"""The Stan side of the fit benchmarks (issue 9 a, b): data, priors and runs through pystan.

The Stan programs live in ``benchmarks/stan/``. This module

* reads a NONMEM-style CSV with pandas (independently of pkpd's reader) and lays it out as the
  programs' data (:func:`one_cmt_oral_data`, :func:`temsirolimus_pk_data`);
* reads the priors from the same TOML file that pkpd reads and checks that the file has the
  structure the program hard-codes (which parameters have between-subject variability,
  proportional error, no covariates, ...), so both sides fit the same model;
* runs pystan in a separate Python process (:func:`run_stan`). httpstan samples in worker
  processes made by ``fork``, and forking a process in which JAX has started its threads can
  deadlock, so the benchmark process (which imports JAX) never imports Stan itself.

Run as a script, it is that worker: ``python benchmarks/stan_side.py JOB.json OUT.npz``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
STAN_DIR = HERE / "stan"
#: Inputs both sides of the benchmarks read (bench_fit.py, check_stan_models.py).
TEMSIROLIMUS_CSV = HERE.parent / "datasets" / "temsirolimus" / "temsirolimus.csv"
PRIORS = {
    "one_cmt_oral": HERE / "priors_one_cmt_oral_prop.toml",
    "temsirolimus_pk": HERE / "priors_temsirolimus_pk.toml",
}
PROGRAMS = {
    "one_cmt_oral": STAN_DIR / "one_cmt_oral.stan",
    "temsirolimus_pk": STAN_DIR / "temsirolimus_pk.stan",
}
#: Population parameters of each program, in the order of its prior vectors (pkpd's names).
POP_PARAMS = {
    "one_cmt_oral": ("cl", "v", "ka"),
    "temsirolimus_pk": ("cl", "v1", "q", "v2", "cl_sir", "v_sir"),
}
#: Parameters with between-subject variability, in the order of ``prior_omega_scale``.
BSV_PARAMS = {
    "one_cmt_oral": ("cl", "v", "ka"),
    "temsirolimus_pk": ("cl", "v1", "v2", "cl_sir", "v_sir"),
}
#: Endpoints (residual entries) of each program, in the order of ``prior_sigma_scale``.
ENDPOINTS = {
    "one_cmt_oral": ("conc",),
    "temsirolimus_pk": ("temsirolimus", "sirolimus"),
}
#: Temsirolimus DVID codes of the PK endpoints (datasets/README.md).
TEM_DVID = {1: "temsirolimus", 2: "sirolimus"}


class StanSetupError(ValueError):
    """Data or priors that the Stan program cannot represent; the message says what to change."""


@dataclass(frozen=True)
class StanProblem:
    """A Stan program with its data, ready to run."""

    program: str
    data: dict
    n_subjects: int
    n_obs: int
    n_blq: int

    @property
    def pop_params(self) -> tuple[str, ...]:
        return POP_PARAMS[self.program]


# ---------------------------------------------------------------------------------------------
# Data


def read_nonmem(source) -> pd.DataFrame:
    """A NONMEM-style CSV (``#`` comment lines, ``.`` for missing) with upper-case columns."""
    if isinstance(source, pd.DataFrame):
        df = source.copy()
    else:
        df = pd.read_csv(source, comment="#", na_values=["."], skipinitialspace=True)
    df.columns = [str(c).strip().upper() for c in df.columns]
    return df


def _observations(df: pd.DataFrame) -> pd.DataFrame:
    """Observation records that enter the likelihood (EVID 0, MDV 0) with their BLQ flag."""
    evid = df["EVID"] if "EVID" in df else pd.Series(np.where(df["AMT"] > 0, 1, 0), df.index)
    mdv = df["MDV"].fillna(0) if "MDV" in df else pd.Series(0, df.index)
    obs = df[(evid == 0) & (mdv == 0)].copy()
    lloq = obs["LLOQ"] if "LLOQ" in obs else pd.Series(np.nan, obs.index)
    blq_flag = obs["BLQ"].fillna(0) == 1 if "BLQ" in obs else pd.Series(False, obs.index)
    blq = blq_flag | (obs["DV"].notna() & lloq.notna() & (obs["DV"] < lloq))
    if (blq & lloq.isna()).any():
        raise StanSetupError("BLQ observations without an LLOQ; give LLOQ on every BLQ record")
    if (~blq & obs["DV"].isna()).any():
        raise StanSetupError("observations with DV missing that are not BLQ; set MDV=1 on them")
    obs["BLQ_"] = blq.astype(int)
    obs["LLOQ_"] = lloq.fillna(0.0)
    obs["DV_"] = obs["DV"].where(~blq, obs["LLOQ_"])
    return obs


def _doses(df: pd.DataFrame, cmt: int | None) -> pd.DataFrame:
    evid = df["EVID"] if "EVID" in df else pd.Series(np.where(df["AMT"] > 0, 1, 0), df.index)
    bad = [c for c in ("ADDL", "II", "SS", "RATE") if c in df and (df[c].fillna(0) != 0).any()]
    if bad or (evid.isin([2, 3, 4])).any():
        raise StanSetupError(
            f"the Stan benchmark programs take explicit dose records only (no {', '.join(bad)} "
            "or EVID 2-4); expand them first"
        )
    doses = df[evid == 1].copy()
    if "AMTU" in doses and (doses["AMTU"].fillna("mg") != "mg").any():
        raise StanSetupError("doses must be in mg (AMTU); convert mg/m2 doses first")
    if cmt is not None and "CMT" in doses:
        c = doses["CMT"].fillna(0)
        if not c.isin([0, cmt]).all():
            raise StanSetupError(f"doses must go into CMT {cmt} (or 0)")
    return doses


def _pairs(points: pd.DataFrame, doses: pd.DataFrame) -> pd.DataFrame:
    """(point, dose) pairs with the dose strictly before the point, grouped by point.

    ``points`` has columns ``ID``, ``TIME``, ``point`` (0-based, increasing); a dose at the
    point's own time contributes nothing (depot and infusion responses are 0 at dt = 0).
    """
    cols = ["ID", "TIME", "AMT"] + (["DUR"] if "DUR" in doses else [])
    pr = points.merge(doses[cols].rename(columns={"TIME": "TDOSE"}), on="ID", how="inner")
    pr["DT"] = pr["TIME"] - pr["TDOSE"]
    pr = pr[pr["DT"] > 0].sort_values(["point", "TDOSE"], kind="stable")
    return pr


def _csr_start(point_of_pair: np.ndarray, n_points: int) -> np.ndarray:
    counts = np.bincount(point_of_pair, minlength=n_points)
    return (np.concatenate([[0], np.cumsum(counts)]) + 1).astype(int)  # 1-based


def one_cmt_oral_data(
    df, priors_path, *, centered: bool = False, emit_pred: bool = False
) -> StanProblem:
    """Data of ``one_cmt_oral.stan`` from a NONMEM-style dataset (doses into CMT 1, the depot)."""
    df = read_nonmem(df)
    ids = pd.unique(df["ID"])
    sub = {i: k + 1 for k, i in enumerate(ids)}
    obs = _observations(df).reset_index(drop=True)
    obs["point"] = np.arange(len(obs))
    doses = _doses(df, cmt=1)
    pr = _pairs(obs[["ID", "TIME", "point"]], doses)
    data = {
        "n_subjects": len(ids),
        "n_obs": len(obs),
        "obs_subject": obs["ID"].map(sub).to_numpy(int),
        "obs_y": obs["DV_"].to_numpy(float),
        "obs_lloq": obs["LLOQ_"].to_numpy(float),
        "obs_blq": obs["BLQ_"].to_numpy(int),
        "n_pairs": len(pr),
        "pair_subject": pr["ID"].map(sub).to_numpy(int),
        "pair_dt": pr["DT"].to_numpy(float),
        "pair_amt": pr["AMT"].to_numpy(float),
        "pair_start": _csr_start(pr["point"].to_numpy(int), len(obs)),
        "centered": int(centered),
        "emit_pred": int(emit_pred),
        **stan_priors("one_cmt_oral", priors_path),
    }
    return StanProblem("one_cmt_oral", data, len(ids), len(obs), int(obs["BLQ_"].sum()))


def temsirolimus_pk_data(
    df, priors_path, *, centered: bool = False, emit_pred: bool = False
) -> StanProblem:
    """Data of ``temsirolimus_pk.stan``: PK observations (DVID 1, 2), IV infusions (DUR > 0)."""
    df = read_nonmem(df)
    if "STUDY" in df and df["STUDY"].nunique() > 1:
        raise StanSetupError(
            "the Stan program has no study effect; give one study (e.g. STUDY == 'PH2')"
        )
    ids = pd.unique(df["ID"])
    sub = {i: k + 1 for k, i in enumerate(ids)}
    obs = _observations(df)
    obs = obs[obs["DVID"].isin(list(TEM_DVID))].reset_index(drop=True)
    doses = _doses(df, cmt=1)
    if "DUR" not in doses or (doses["DUR"].fillna(0) <= 0).any():
        raise StanSetupError("temsirolimus_pk.stan takes IV infusions with DUR > 0 only")
    points = obs[["ID", "TIME"]].drop_duplicates().reset_index(drop=True)
    points["point"] = np.arange(len(points))
    obs = obs.merge(points, on=["ID", "TIME"], how="left", validate="many_to_one")
    pr = _pairs(points, doses)
    data = {
        "n_subjects": len(ids),
        "n_points": len(points),
        "point_subject": points["ID"].map(sub).to_numpy(int),
        "n_pairs": len(pr),
        "pair_subject": pr["ID"].map(sub).to_numpy(int),
        "pair_dt": pr["DT"].to_numpy(float),
        "pair_dur": pr["DUR"].to_numpy(float),
        "pair_amt": pr["AMT"].to_numpy(float),
        "pair_start": _csr_start(pr["point"].to_numpy(int), len(points)),
        "n_obs": len(obs),
        "obs_point": obs["point"].to_numpy(int) + 1,
        "obs_endpoint": obs["DVID"].to_numpy(int),
        "obs_y": obs["DV_"].to_numpy(float),
        "obs_lloq": obs["LLOQ_"].to_numpy(float),
        "obs_blq": obs["BLQ_"].to_numpy(int),
        "centered": int(centered),
        "emit_pred": int(emit_pred),
        **stan_priors("temsirolimus_pk", priors_path),
    }
    return StanProblem("temsirolimus_pk", data, len(ids), len(obs), int(obs["BLQ_"].sum()))


# ---------------------------------------------------------------------------------------------
# Priors


def stan_priors(program: str, path) -> dict:
    """The prior numbers of a TOML priors file as Stan data, after checking its structure.

    Raises :class:`StanSetupError` listing every entry the Stan program cannot represent.
    """
    raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    params = raw.get("parameters", {})
    problems = []
    median, sd_log, omega = [], [], []
    for p in POP_PARAMS[program]:
        e = params.get(p, {})
        pr = e.get("prior", {})
        if pr.get("family") != "lognormal" or e.get("transform", "log") != "log":
            problems.append(f"[parameters.{p}]: the Stan program needs a lognormal prior")
            continue
        median.append(float(pr["median"]))
        sd_log.append(float(pr["sd_log"]))
        bsv = e.get("bsv")
        if p in BSV_PARAMS[program]:
            if not bsv or bsv.get("family") != "halfnormal":
                problems.append(f"[parameters.{p}]: the Stan program needs a halfnormal bsv")
        elif bsv:
            problems.append(f"[parameters.{p}]: the Stan program has no bsv on {p}")
        if "bsv_study" in e:
            problems.append(f"[parameters.{p}]: the Stan program has no study effect")
    for p in BSV_PARAMS[program]:
        bsv = params.get(p, {}).get("bsv") or {}
        omega.append(float(bsv.get("scale", math.nan)))
    extra = (
        set(params) - set(POP_PARAMS[program]) - ({"fm"} if program != "one_cmt_oral" else set())
    )
    if extra:
        problems.append(f"parameters {sorted(extra)} are not in the Stan program")
    if raw.get("covariates"):
        problems.append("[covariates]: the Stan program has no covariate effects")
    if raw.get("correlation"):
        problems.append("[correlation]: the Stan program has no correlated random effects")
    sigma = []
    for ep in ENDPOINTS[program]:
        r = raw.get("residual", {}).get(ep, {})
        prop = r.get("proportional", {})
        if r.get("model") != "proportional" or prop.get("family") != "halfnormal":
            problems.append(f"[residual.{ep}]: the Stan program needs proportional, halfnormal")
            continue
        sigma.append(float(prop["scale"]))
    out = {
        "prior_median": median,
        "prior_sd_log": sd_log,
        "prior_omega_scale": omega,
        "prior_sigma_scale": sigma if len(sigma) > 1 else (sigma or [math.nan])[0],
    }
    if program == "temsirolimus_pk":
        fm = params.get("fm", {}).get("prior", {})
        if fm.get("family") != "fixed":
            problems.append("[parameters.fm]: the Stan program needs fm fixed")
        else:
            out["fm"] = float(fm["value"])
    if problems:
        raise StanSetupError(
            f"priors file {path} does not match benchmarks/stan/{program}.stan:\n  - "
            + "\n  - ".join(problems)
        )
    return out


def sigma_name(program: str, endpoint: str) -> str:
    """Name of the residual SD of ``endpoint`` in the Stan program."""
    return "sigma_prop" if program == "one_cmt_oral" else f"sigma_prop_{endpoint}"


def prior_inits(problem: StanProblem, chains: int, seed: int) -> list[dict]:
    """Initial values near the prior medians, jittered per chain (what a modeller would give).

    Typical values: prior median x exp(U(-0.2, 0.2)); between-subject SDs: half their prior
    scale; every subject at the typical value; residual SDs: half their prior scale.
    """
    d = problem.data
    program = problem.program
    sig = np.atleast_1d(d["prior_sigma_scale"])
    inits = []
    for c in range(chains):
        rng = np.random.default_rng([seed, c])
        init = {}
        for k, p in enumerate(POP_PARAMS[program]):
            init[f"log_{p}_pop"] = float(np.log(d["prior_median"][k]) + rng.uniform(-0.2, 0.2))
        for k, p in enumerate(BSV_PARAMS[program]):
            init[f"omega_{p}"] = 0.5 * float(d["prior_omega_scale"][k])
            init[f"log_{p}"] = np.full(d["n_subjects"], init[f"log_{p}_pop"])
        for k, e in enumerate(ENDPOINTS[program]):
            init[sigma_name(program, e)] = 0.5 * float(sig[k])
        inits.append(init)
    return inits


# ---------------------------------------------------------------------------------------------
# Running Stan (in a child process)


def run_stan(job: dict, workdir=None, timeout_s: float | None = None) -> dict:
    """Run one Stan job in a fresh Python process and return its results.

    ``job``: ``program`` (a key of :data:`PROGRAMS`), ``data``, ``mode`` (``"sample"``,
    ``"fixed_param"`` or ``"log_prob"``, which evaluates the log density on the unconstrained
    space, with the Jacobian, at the constrained parameter dicts of ``points``), ``chains``,
    ``warmup``, ``draws``, ``seed``, ``fresh_compile`` (delete httpstan's cached build first, so
    the build time is a real compile), ``init`` (list of dicts, optional) and ``outputs``
    (names of the quantities to return).

    Returns a dict: ``compile_s``, ``sample_s``, ``cached_build`` and, per output name, an
    array ``[chain, draw, ...]``; sampler statistics as ``stat_<name>``.
    """
    with tempfile.TemporaryDirectory(dir=workdir, prefix="stan_job_") as tmp:
        job_path = Path(tmp) / "job.json"
        out_path = Path(tmp) / "out.npz"
        job_path.write_text(json.dumps(job, cls=_NumpyEncoder))
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env["TMPDIR"] = tmp  # httpstan's unix sockets are left behind: keep them in here
        res = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), str(job_path), str(out_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if res.returncode != 0:
            raise RuntimeError(
                f"Stan job ({job['program']}, {job.get('mode')}) failed:\n{res.stderr[-4000:]}"
            )
        with np.load(out_path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        meta = json.loads((Path(tmp) / "out.json").read_text())
    out.update(meta)
    return out


class _NumpyEncoder(json.JSONEncoder):
    def default(self, o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating):
            return float(o)
        return super().default(o)


def _worker(job_path: str, out_path: str) -> None:
    import shutil

    import httpstan.cache
    import httpstan.models
    import stan

    job = json.loads(Path(job_path).read_text())
    code = PROGRAMS[job["program"]].read_text()
    model_name = httpstan.models.calculate_model_name(code)
    model_dir = httpstan.cache.model_directory(model_name)
    if job.get("fresh_compile", False):
        httpstan.cache.delete_model_directory(model_name)
    cached = model_dir.exists()
    # httpstan caches fits made with a seed and would return them without sampling
    shutil.rmtree(model_dir / "fits", ignore_errors=True)
    t0 = time.perf_counter()
    posterior = stan.build(code, data=job["data"], random_seed=int(job.get("seed", 1)))
    compile_s = time.perf_counter() - t0
    if job.get("mode") == "log_prob":
        # log density on the unconstrained space (with the Jacobian; up to a constant)
        lp = [
            posterior.log_prob(posterior.unconstrain_pars(p), adjust_transform=True)
            for p in job["points"]
        ]
        np.savez(out_path, log_prob=np.asarray(lp, dtype=float))
        meta = {"compile_s": compile_s, "cached_build": cached, "model_name": model_name}
        Path(out_path).with_name("out.json").write_text(json.dumps(meta))
        return
    chains = int(job.get("chains", 4))
    init = job.get("init") or [{} for _ in range(chains)]
    t0 = time.perf_counter()
    if job.get("mode", "sample") == "fixed_param":
        fit = posterior.fixed_param(num_chains=chains, num_samples=int(job["draws"]), init=init)
    else:
        fit = posterior.sample(
            num_chains=chains,
            num_warmup=int(job["warmup"]),
            num_samples=int(job["draws"]),
            init=init,
        )
    sample_s = time.perf_counter() - t0
    shutil.rmtree(model_dir / "fits", ignore_errors=True)
    arrays = {}
    n_draws = fit.num_samples
    for name in job.get("outputs", []):
        # fit[name]: [dims..., draws * chains] with the chain index running fastest
        dims = tuple(fit.dims[fit.param_names.index(name)])
        a = np.asarray(fit[name]).reshape(dims + (chains, n_draws), order="F")
        arrays[name] = np.moveaxis(a, (-2, -1), (0, 1))
    if job.get("mode", "sample") == "sample":
        for stat in ("divergent__", "n_leapfrog__", "treedepth__", "stepsize__"):
            a = np.asarray(fit[stat]).reshape(-1)
            arrays["stat_" + stat.rstrip("_")] = a.reshape((chains, n_draws), order="F")
    np.savez(out_path, **arrays)
    meta = {
        "compile_s": compile_s,
        "sample_s": sample_s,
        "cached_build": cached,
        "model_name": model_name,
        "stan_elapsed": _elapsed_times(fit),
    }
    Path(out_path).with_name("out.json").write_text(json.dumps(meta))


def _elapsed_times(fit) -> list[dict]:
    """Stan's own per-chain warm-up and sampling times (s), from its log messages."""
    out = []
    for raw in fit.stan_outputs:
        warm = samp = None
        for line in raw.splitlines():
            if b'"logger"' not in line or b"seconds" not in line:
                continue
            text = json.loads(line)["values"][0]
            if "(Warm-up)" in text:
                warm = float(text.split("Elapsed Time:")[-1].split()[0])
            elif "(Sampling)" in text:
                samp = float(text.split()[-3])
        out.append({"warmup_s": warm, "sampling_s": samp})
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: stan_side.py JOB.json OUT.npz (the worker of run_stan)")
    _worker(sys.argv[1], sys.argv[2])
