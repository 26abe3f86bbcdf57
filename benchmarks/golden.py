"""Golden outputs for refactors (issue 19): record seeded results, change code, record again,
compare. Not a test (it asserts nothing); a check that moved code gives the same numbers.

    .venv/bin/python benchmarks/golden.py record before/     # before moving code
    .venv/bin/python benchmarks/golden.py record after/
    .venv/bin/python benchmarks/golden.py compare before/ after/

Recorded: seeded simulations of the temsirolimus model (modal and predict engines, a typical
subject), of one_cmt_iv and two_cmt_oral (both engines), a seeded one_cmt_iv NUTS fit and map
fit, and the temsirolimus joint log density and gradient at the prior medians. ``compare``
prints the largest relative difference of every variable and every attribute that differs.
"""

import sys
from pathlib import Path


def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    import json
    from pathlib import Path

    import numpy as np

    import pkpd
    from pkpd.simulate.synthetic import fit_from_values

    ROOT = Path(__file__).resolve().parents[1]
    TRUTH = json.loads((ROOT / "datasets/temsirolimus/truth.json").read_text())
    ds, _ = pkpd.datasets.load("temsirolimus_small")
    tem = fit_from_values(
        "temsirolimus",
        ds,
        TRUTH["typical"],
        omega=TRUTH["omega"],
        omega_study=TRUTH["omega_study"],
        n_draws=12,
        uncertainty=0.05,
        seed=2,
    )
    pkpd.save_fit(tem, out / "tem_fit.nc")
    regs = {
        "std": "25 mg q1w x6 over 30 min",
        "load": "175 mg q1w x2 then 75 mg q1w x4 over 30 min",
    }
    for eng in ("modal", "predict"):
        sim = pkpd.simulate(
            tem, regs, n_subjects=6, n_draws=4, seed=5, engine=eng, progress_bar=False
        )
        sim.attrs.pop("created", None)
        pkpd.save_simulation(sim, out / f"tem_sim_{eng}.nc")
    sim = pkpd.simulate(tem, regs, n_draws=3, seed=5, typical=True, study="new", progress_bar=False)
    pkpd.save_simulation(sim, out / "tem_sim_typical.nc")
    rows = []
    for i in range(8):
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan, WT=60.0 + 3 * i))
        rows += [
            dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=1.0, WT=60.0 + 3 * i)
            for t in (1.0, 4.0, 12.0)
        ]
    import pandas as pd

    df = pd.DataFrame(rows)
    for model, vals, om in [
        ("one_cmt_iv", {"cl": 2.0, "v": 30.0}, {"cl": 0.3, "v": 0.2}),
        ("two_cmt_oral", {"cl": 2.0, "v1": 30.0, "q": 3.0, "v2": 50.0, "ka": 1.0}, {"cl": 0.3}),
    ]:
        f = fit_from_values(model, df, vals, omega=om, n_draws=8, uncertainty=0.1, seed=1)
        for eng in ("modal", "predict"):
            sim = pkpd.simulate(
                f, "100 mg q12h x4", n_subjects=5, n_draws=3, seed=2, engine=eng, progress_bar=False
            )
            pkpd.save_simulation(sim, out / f"{model}_sim_{eng}.nc")

    # a tiny seeded NUTS fit and a quick fit of one_cmt_iv

    rng = np.random.default_rng(3)
    rows = []
    for i in range(10):
        cl, v = 2.0 * np.exp(rng.normal(0, 0.3)), 30 * np.exp(rng.normal(0, 0.2))
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan))
        for t in (0.5, 2.0, 6.0, 12.0):
            c = 1000 * 100 / v * np.exp(-cl / v * t) * np.exp(rng.normal(0, 0.1))
            rows.append(dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=round(c, 3)))
    df1 = pd.DataFrame(rows)
    df1.to_csv(out / "one_cmt.csv", index=False)
    f = pkpd.fit("one_cmt_iv", df1, chains=1, warmup=60, draws=30, seed=1, progress_bar=False)
    f.attrs.pop("created", None)
    f.attrs.pop("timing_s", None)
    pkpd.save_fit(f, out / "one_cmt_nuts.nc")
    f = pkpd.fit("one_cmt_iv", df1, method="map", draws=30, seed=1, progress_bar=False)
    f.attrs.pop("created", None)
    f.attrs.pop("timing_s", None)
    f.attrs.pop("map_timing_s", None)
    pkpd.save_fit(f, out / "one_cmt_map.nc")

    # the temsirolimus joint log density and gradient at the prior medians
    import jax
    import jax.numpy as jnp
    from numpyro.infer import init_to_median
    from numpyro.infer.util import initialize_model

    from pkpd.inference.fit import build_model, prepare

    spec = prepare("temsirolimus", ds)
    nm = build_model(spec)
    obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
    info = initialize_model(
        jax.random.PRNGKey(0),
        nm,
        model_kwargs={"obs": obs},
        init_strategy=init_to_median(num_samples=15),
    )
    x = info.param_info.z
    pe, g = jax.value_and_grad(info.potential_fn)(x)
    flat = jax.flatten_util.ravel_pytree(g)[0]
    np.savez(
        out / "tem_logdensity.npz",
        pe=np.asarray(pe),
        grad=np.asarray(flat),
        names=np.array(sorted(x)),
    )
    print("done", float(pe))


def compare(a: Path, b: Path) -> None:

    import numpy as np
    import xarray as xr

    for f in sorted(a.glob("*.nc")):
        g = b / f.name
        if not g.exists():
            print("MISSING", f.name)
            continue
        groups = [None]
        try:
            import arviz as az

            ia = az.from_netcdf(f)
            ib = az.from_netcdf(g)
            groups = ia.groups()
            dsa = {k: ia[k] for k in groups}
            dsb = {k: ib[k] for k in groups}
        except Exception:
            dsa = {"": xr.open_dataset(f)}
            dsb = {"": xr.open_dataset(g)}
        worst = (0.0, None)
        diffs = []
        for grp in dsa:
            A, B = dsa[grp], dsb.get(grp)
            if B is None:
                diffs.append(f"group {grp} missing")
                continue
            if set(A.data_vars) != set(B.data_vars):
                diffs.append(f"{grp}: vars differ {set(A.data_vars) ^ set(B.data_vars)}")
            for v in A.data_vars:
                if v not in B:
                    continue
                x, y = A[v].values, B[v].values
                if x.shape != y.shape:
                    diffs.append(f"{grp}/{v} shape {x.shape} vs {y.shape}")
                    continue
                if x.dtype.kind in "fc":
                    d = (
                        np.nanmax(np.abs(x - y) / np.maximum(np.abs(x), 1e-300), initial=0)
                        if x.size
                        else 0
                    )
                    if not np.array_equal(np.isnan(x), np.isnan(y)):
                        diffs.append(f"{grp}/{v} NaN pattern")
                    if d > worst[0]:
                        worst = (d, f"{grp}/{v}")
                elif not np.array_equal(x, y):
                    diffs.append(f"{grp}/{v} differs")
            for k in set(A.attrs) | set(B.attrs):
                if k in ("created", "fit_created", "timing_s", "map_timing_s"):
                    continue
                if str(A.attrs.get(k)) != str(B.attrs.get(k)):
                    diffs.append(
                        f"{grp} attr {k}: {str(A.attrs.get(k))[:80]!r} vs {str(B.attrs.get(k))[:80]!r}"
                    )
        print(
            f"{f.name}: max rel diff {worst[0]:.3g} ({worst[1]}); "
            + ("; ".join(diffs[:6]) or "no other differences")
        )
    x = np.load(a / "tem_logdensity.npz") if (a / "tem_logdensity.npz").exists() else None
    y = np.load(b / "tem_logdensity.npz") if (b / "tem_logdensity.npz").exists() else None
    if x is not None and y is not None:
        print(
            "logdensity",
            float(x["pe"]),
            float(y["pe"]),
            "grad max rel",
            np.max(np.abs(x["grad"] - y["grad"]) / np.maximum(np.abs(x["grad"]), 1e-12)),
        )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
