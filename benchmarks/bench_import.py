"""Start-up cost: ``pkpd --help``, ``pkpd validate``, ``import pkpd`` and a first public call,
each in a new process, side by side in one run, with ``python -c pass`` as the baseline.

    .venv/bin/python benchmarks/bench_import.py [--repeat 5]

Prints the median wall time of each over ``--repeat`` runs and its ratio to importing JAX
alone (what ``import pkpd`` cost when it imported everything eagerly).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _time(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "d.csv"
        csv.write_text("ID,TIME,EVID,AMT,DV\n1,0,1,100,.\n1,1,0,0,4.5\n")
        cases = {
            "python -c pass": [py, "-c", "pass"],
            "import jax": [py, "-c", "import jax"],
            "pkpd --help": [py, "-m", "pkpd.cli", "--help"],
            "pkpd validate FILE": [py, "-m", "pkpd.cli", "validate", str(csv)],
            "import pkpd": [py, "-c", "import pkpd"],
            "import pkpd; pkpd.fit (first use)": [py, "-c", "import pkpd; pkpd.fit"],
        }
        res = {name: _time(cmd, args.repeat) for name, cmd in cases.items()}
    ref = res["import jax"]
    print(f"median of {args.repeat} runs, each in a new process")
    print(f"{'command':40s} {'s':>7s} {'/ import jax':>13s}")
    for name, t in res.items():
        print(f"{name:40s} {t:7.3f} {t / ref:13.2f}")


if __name__ == "__main__":
    main()
