"""The temsirolimus model from blocks against the hand-wired class (issue 20 item 3).

``pkpd.models.temsirolimus.from_blocks()`` (closed-form PK with the metabolite, the molar
driver as an ActiveMoiety, the S6K effect site, VEGF and PD-1 on the dose-aware grid) against
``TemsirolimusModel`` on the bundled 40-subject data (``temsirolimus_small``: four studies,
every endpoint) with the bundled priors (study effects and covariates included; the priors
file's model name changed for the blocks), side by side in one run: the log-density gradient
at the priors' medians, per endpoint set. Prints compile time, ms per gradient, the log
density (equal up to the VEGF/PD-1 grid's rounding) and the ratio.

    .venv/bin/python benchmarks/bench_temsirolimus_blocks.py [--repeat 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pkpd
from pkpd.models.temsirolimus import from_blocks

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_blocks import gradient_cost  # noqa: E402

ENDPOINT_SETS = {
    "PK": ["temsirolimus", "sirolimus"],
    "PK + S6K": ["temsirolimus", "sirolimus", "s6k"],
    "all": ["temsirolimus", "sirolimus", "s6k", "vegf", "pd1_cd8"],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=100)
    a = ap.parse_args()
    data = pkpd.datasets.path("temsirolimus_small")
    blocks = from_blocks()
    tmp = Path("build/bench_temsirolimus_blocks")
    tmp.mkdir(parents=True, exist_ok=True)
    priors = tmp / "priors.toml"
    text = (HERE.parent / "priors" / "temsirolimus.toml").read_text()
    priors.write_text(text.replace('name = "temsirolimus"', f'name = "{blocks.name}"', 1))
    bundled = HERE.parent / "priors" / "temsirolimus.toml"
    for label, eps in ENDPOINT_SETS.items():
        out = {}
        for name, model, pri in (("class", "temsirolimus", bundled), ("blocks", blocks, priors)):
            out[name] = gradient_cost(model, data, a.repeat, priors=pri, endpoints=eps)
            c, ms, v = out[name]
            print(f"{label:>9} {name:>6}: compile {c:6.1f} s, gradient {ms:7.3f} ms, "
                  f"log density {-v:.6f}")  # fmt: skip
        print(f"{label:>9}  blocks / class: {out['blocks'][1] / out['class'][1]:.2f}x")


if __name__ == "__main__":
    main()
