"""Cost of a model built from blocks, by engine, and of the same model as the user's own ODE.

One-compartment oral PK + an indirect response (type I) on 24 synthetic subjects (two daily
200 mg doses; 7 PK and 6 PD samples each), side by side in one run: the log-density gradient
of the same fit with

* the blocks' ``"grid"`` engine (closed-form PK, turnover on the dose-aware grid),
* the blocks with ``solver="ode"`` (diffrax, Kvaerno5, rtol 1e-8),
* the same equations written by hand as an :class:`pkpd.models.ODEModel` (Kvaerno5),
* that ODEModel with ``solver="tsit5"`` (diffrax's explicit solver),
* that ODEModel with ``solver="dopri5"`` (pkpd's explicit solver with its own adjoint), at the
  default tolerances (rtol 1e-8, atol 1e-10), at rtol 1e-6 and at rtol 1e-5 (the last about
  the grid engine's own accuracy, ~1e-5 relative).

Prints compile time and ms per gradient of each, and the ratios to the grid engine.

    .venv/bin/python benchmarks/bench_blocks.py [--subjects 24] [--repeat 20] [--only dopri5]

``--only TEXT`` keeps the cases whose label contains TEXT (and the grid engine, the base).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpyro.infer import init_to_median
from numpyro.infer.util import initialize_model

import pkpd
from pkpd.inference.model import build_model
from pkpd.inference.spec import prepare
from pkpd.models import ODEModel, blocks

TRUTH = {"cl": 3.0, "v": 30.0, "ka": 1.2, "marker_base": 100.0, "marker_kout": 0.15,
         "marker_imax": 0.8, "marker_ic50": 1500.0}  # fmt: skip
OMEGA = {"cl": 0.3, "v": 0.2, "ka": 0.3, "marker_base": 0.2}


def block_model(solver="auto"):
    return blocks.build(
        f"bench_idr_{solver}",
        blocks.PK(absorption="first_order", code=1, error="proportional"),
        blocks.IndirectResponse("marker", kind=1, unit="U/L", code=2, error="proportional"),
        typical=TRUTH,
        solver=solver,
    )


def hand_written(solver="kvaerno5", **options):
    def rhs(t, y, p):
        c = 1000.0 * y["central"] / p["v"]  # ng/mL
        inhibition = p["marker_imax"] * c / (p["marker_ic50"] + c)
        kin = p["marker_base"] * p["marker_kout"]
        return {
            "depot": -p["ka"] * y["depot"],
            "central": p["ka"] * y["depot"] - p["cl"] / p["v"] * y["central"],
            "marker": kin * (1 - inhibition) - p["marker_kout"] * y["marker"],
        }

    ref = block_model()
    return ODEModel(
        name=f"bench_hand_{solver}",
        states=("depot", "central", "marker"),
        # the structural parameters (the dose modifiers lag_/f_/dur_/rate_ stay at defaults)
        params={k: ref.parameters[k] for k in ref.structural_parameters},
        outputs={"conc": "ng/mL", "marker": "U/L"},
        rhs=rhs,
        observe=lambda t, y, p: {"conc": 1000.0 * y["central"] / p["v"], "marker": y["marker"]},
        doses={1: "depot", 2: "central"},
        initial=lambda p: {"marker": p["marker_base"]},
        codes={1: "conc", 2: "marker"},
        concentrations={"conc": "v"},
        solver=solver,
        priors={k: v for k, v in ref.default_priors.items() if k != "model"},
        **options,
    )


def study(n, seed=3):
    """Synthetic data from the blocks' model at subject parameters drawn around TRUTH."""
    model = block_model()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        rows += [
            dict(ID=i, TIME=t, EVID=1, AMT=200.0, CMT=1, DVID=".", DV=".") for t in (0.0, 24.0)
        ]
        rows += [
            dict(ID=i, TIME=t, EVID=0, AMT=0, CMT=2, DVID=1, DV=1.0)
            for t in (0.5, 1, 2, 4, 8, 12, 23)
        ]
        rows += [
            dict(ID=i, TIME=t, EVID=0, AMT=0, CMT=2, DVID=2, DV=1.0) for t in (2, 8, 23, 48, 72, 96)
        ]
    df = pd.DataFrame(rows).sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    pad = pkpd.read_dataset(df, model=model).to_arrays()
    params = {
        k: jnp.asarray(v * np.exp(OMEGA.get(k, 0.0) * rng.standard_normal(n)))
        for k, v in TRUTH.items()
    }
    pred = jax.vmap(model.predict)(params, jax.tree.map(jnp.asarray, pad.data))
    mask = np.asarray(pad.data.point_mask)
    ep = np.asarray(pad.data.point_endpoint)
    y = np.where(
        ep == pad.endpoints.index("conc"), np.asarray(pred["conc"]), np.asarray(pred["marker"])
    )
    y = y * np.exp(rng.normal(0, 0.1, y.shape))
    df.loc[df.EVID == 0, "DV"] = y[mask]
    return df


def gradient_fn(model, df, priors=None, **options):
    """The jitted log density and gradient of a fit's model at the priors' medians: ``(g, u,
    compile_s, value)``."""
    spec = prepare(model, df, priors, **options)
    info = initialize_model(
        jax.random.PRNGKey(0),
        build_model(spec),
        model_kwargs={"obs": jnp.asarray(spec.obs_y)},
        init_strategy=init_to_median(num_samples=31),  # the priors' medians: typical values
    )
    u = info.param_info.z
    g = jax.jit(jax.value_and_grad(info.potential_fn))
    t = time.perf_counter()
    value = jax.block_until_ready(g(u))[0]
    return g, u, time.perf_counter() - t, float(value)


def gradient_cost(model, df, repeat, priors=None, **options):
    g, u, compile_s, value = gradient_fn(model, df, priors, **options)
    t = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(g(u))
    return compile_s, (time.perf_counter() - t) / repeat * 1e3, value


def compare(cases, data, base, *, digits=4, rounds=15):
    """The gradient cost of each case side by side: ``cases`` maps a label to ``(model,
    repeat, prepare options)``; every case is compiled first, then timed in ``rounds``
    interleaved rounds of ``repeat`` gradients each (the median round, so that the machine's
    slow spells hit every case alike). Prints compile time, ms per gradient (median and
    fastest round) and the log density of each, then each one's ratio to case ``base``.
    Returns ``{label: (compile_s, ms, value)}``."""
    width = max(map(len, cases))
    fns = {name: gradient_fn(model, data, **options) for name, (model, _, options) in cases.items()}
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (g, u, _, _) in fns.items():
            repeat = max(1, cases[name][1] // rounds)
            t = time.perf_counter()
            for _ in range(repeat):
                jax.block_until_ready(g(u))
            times[name].append((time.perf_counter() - t) / repeat * 1e3)
    out = {}
    for name, (_, _, c, v) in fns.items():
        ms = float(np.median(times[name]))
        out[name] = (c, ms, v)
        print(f"{name:>{width}}: compile {c:6.1f} s, gradient {ms:8.3f} ms (fastest round "
              f"{min(times[name]):.3f}), log density {-v:.{digits}f}")  # fmt: skip
    for name, (_, ms, _) in out.items():
        print(f"{name:>{width}}: {ms / out[base][1]:6.2f}x the gradient of {base!r}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--only", default="", help="keep the cases whose label contains this")
    a = ap.parse_args()
    df = study(a.subjects)
    cases = {
        "blocks, grid engine": block_model(),
        "blocks, solver='ode'": block_model("ode"),
        "hand-written ODEModel, kvaerno5": hand_written(),
        "hand-written ODEModel, tsit5": hand_written("tsit5"),
        "hand-written ODEModel, dopri5": hand_written("dopri5"),
        "hand-written ODEModel, dopri5, rtol 1e-6": hand_written("dopri5", rtol=1e-6, atol=1e-8),
        "hand-written ODEModel, dopri5, rtol 1e-5": hand_written("dopri5", rtol=1e-5, atol=1e-7),
    }
    base = "blocks, grid engine"
    if a.only:
        cases = {k: m for k, m in cases.items() if k == base or a.only in k}
    compare({k: (m, a.repeat, {}) for k, m in cases.items()}, df, base, digits=5)


if __name__ == "__main__":
    main()
