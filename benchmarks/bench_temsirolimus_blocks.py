"""The temsirolimus model from blocks against the hand-wired class (issue 20 item 3).

``pkpd.models.temsirolimus.from_blocks()`` (closed-form PK with the metabolite, the molar
driver as an ActiveMoiety, the S6K effect site, VEGF and PD-1 on the dose-aware grid) against
``TemsirolimusModel`` on the bundled 40-subject data (``temsirolimus_small``: four studies,
every endpoint) with the bundled priors (study effects and covariates included; the priors
file's model name changed for the blocks), side by side in one run: the log-density gradient
at the priors' medians, per endpoint set. Prints compile time, ms per gradient, the log
density (equal up to the VEGF/PD-1 grid's rounding) and the ratio.

    .venv/bin/python benchmarks/bench_temsirolimus_blocks.py [--repeat 600] [--iov]

Each case is compiled first, then the cases are timed in 15
interleaved rounds (``bench_blocks.compare``).

``--iov`` gives clearance inter-occasion variability (the data's OCC column; a half-normal
SD prior of scale 0.2 in both priors files): the class's occasion path against the blocks'
closed-form one.

``--fit`` instead fits both to the same data (every endpoint, NUTS 2 × (150 + 150), seed 1:
the recovery test's settings) and prints each fit's wall time, divergences and the
population values side by side (median and 90% interval).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pkpd
from pkpd.models.temsirolimus import TemsirolimusModel, from_blocks

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_blocks import compare  # noqa: E402

ENDPOINT_SETS = {
    "PK": ["temsirolimus", "sirolimus"],
    "PK + S6K": ["temsirolimus", "sirolimus", "s6k"],
    "all": ["temsirolimus", "sirolimus", "s6k", "vegf", "pd1_cd8"],
}


def fits(data, blocks, priors, bundled):
    import time

    import numpy as np

    out = {}
    for name, model, pri in (("class", TemsirolimusModel(), bundled), ("blocks", blocks, priors)):
        clock = time.perf_counter()
        idata = pkpd.fit(model, data, pri, chains=2, warmup=150, draws=150, seed=1,
                         progress_bar=False)  # fmt: skip
        wall = time.perf_counter() - clock
        div = int(idata.sample_stats["diverging"].sum())
        print(f"{name:>6}: {wall:.0f} s, {div} divergences")
        out[name] = idata.posterior
    print(f"{'':>16} {'class median [5%, 95%]':>30} {'blocks median [5%, 95%]':>30}")
    for v in sorted(k for k in out["class"].data_vars if k.startswith("pop_")):
        cells = []
        for name in ("class", "blocks"):
            x = out[name][v].values.ravel()
            q = np.quantile(x, [0.5, 0.05, 0.95])
            cells.append(f"{q[0]:.4g} [{q[1]:.4g}, {q[2]:.4g}]")
        print(f"{v:>16} {cells[0]:>30} {cells[1]:>30}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=100)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--iov", action="store_true", help="clearance IOV in both priors files")
    a = ap.parse_args()
    data = pkpd.datasets.path("temsirolimus_small")
    blocks = from_blocks()
    tmp = Path("build/bench_temsirolimus_blocks")
    tmp.mkdir(parents=True, exist_ok=True)
    priors = tmp / "priors.toml"
    bundled = HERE.parent / "priors" / "temsirolimus.toml"
    text = bundled.read_text()
    if a.iov:
        cl = '[parameters.cl]\nunit = "L/h"\n'
        assert cl in text
        text = text.replace(cl, cl + 'iov = { family = "halfnormal", scale = 0.2 }\n', 1)
        bundled = tmp / "priors_class_iov.toml"
        bundled.write_text(text)
    priors.write_text(text.replace('name = "temsirolimus"', f'name = "{blocks.name}"', 1))
    if a.fit:
        return fits(data, blocks, priors, bundled)
    for label, eps in ENDPOINT_SETS.items():
        cases = {
            f"{label}, class": (TemsirolimusModel(), a.repeat, dict(priors=bundled, endpoints=eps)),
            f"{label}, blocks": (blocks, a.repeat, dict(priors=priors, endpoints=eps)),
        }
        compare(cases, data, f"{label}, class", digits=6)


if __name__ == "__main__":
    main()
