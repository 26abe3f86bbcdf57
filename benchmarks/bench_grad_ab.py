"""Gradient of the full temsirolimus fit's potential: this checkout against another commit.

The time a NUTS fit takes is (leapfrog steps) × (one gradient of the potential), so a change to
the model's code is judged by this gradient on the bundled 365-subject data (all five
endpoints, non-centred subject effects, the bundled priors, at a start drawn as a fit draws
it). Both sides run in child processes that alternate (A, B, A, B, ...), each timing blocks of
calls of the compiled gradient; the median over rounds of each side's median, and their
ratio, are reported. Alternating makes the comparison fair on a shared, noisy machine: a
slow spell hits both sides alike. The other commit is checked out into a temporary
``git worktree`` and imported from there.

    .venv/bin/python benchmarks/bench_grad_ab.py --base REV [--rounds 5] [--endpoints ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import jax, jax.numpy as jnp, numpy as np
import pkpd
from pkpd.inference import fit as F
eps = json.loads(sys.argv[2]) or None
ds, _ = pkpd.datasets.load("temsirolimus")
spec = F.prepare("temsirolimus", ds, None, endpoints=eps)
spec.parameterization = "noncentered"
nm = F.build_model(spec)
obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
x, objective = F._valid_start(nm, obs, jax.random.PRNGKey(0))
g = jax.jit(jax.grad(objective.pe))
x = jnp.asarray(x)
jax.block_until_ready(g(x))
t0 = time.perf_counter(); jax.block_until_ready(g(x)); once = time.perf_counter() - t0
calls = max(5, int(0.3 / max(once, 1e-6)))
times = []
for r in range(int(sys.argv[3])):
    t0 = time.perf_counter()
    for i in range(calls):
        out = g(x + 1e-9 * i)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / calls)
print(json.dumps({"median_s": sorted(times)[len(times) // 2], "n_obs": len(spec.obs_y)}))
"""


def run_side(src: Path, endpoints, blocks: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(src), json.dumps(endpoints), str(blocks)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the commit to compare against (git rev)")
    ap.add_argument("--rounds", type=int, default=5, help="alternations of the two sides")
    ap.add_argument("--blocks", type=int, default=7, help="timed blocks per side and round")
    ap.add_argument("--endpoints", nargs="*", default=None, help="default: all five")
    args = ap.parse_args(argv)
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.base],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(wt), rev],
            check=True,
        )
        try:
            sides = {f"base {rev}": wt, "this checkout": ROOT}
            got: dict[str, list[float]] = {k: [] for k in sides}
            for _ in range(args.rounds):
                for name, src in sides.items():
                    res = run_side(src, args.endpoints, args.blocks)
                    got[name].append(res["median_s"])
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], check=True
            )
    eps = ", ".join(args.endpoints) if args.endpoints else "all endpoints"
    print(f"# gradient of the temsirolimus potential, 365 subjects, {eps}")
    print("| side | median (ms) | rounds (ms) |")
    print("| --- | --- | --- |")
    med = {}
    for name, ts in got.items():
        med[name] = statistics.median(ts)
        print(f"| {name} | {med[name] * 1e3:.2f} | {', '.join(f'{t * 1e3:.2f}' for t in ts)} |")
    a, b = med.values()
    print(f"\nbase / this checkout: {a / b:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
