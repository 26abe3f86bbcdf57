"""Build pkpd's documentation site: ``python docs/build.py [--out build/docs] [--execute off]``.

The sources stay where they are: this folder's pages, ``notebooks/*.ipynb`` (the tutorials) and
the README files the pages include are copied into ``<out>/source`` and Sphinx builds
``<out>/html`` from there (into a temporary folder first, so a failed build leaves the previous
site, or none, never half of one). Warnings are errors: a broken reference, a missing include
or a docstring Sphinx cannot read fails the build.

``--execute force`` (default) runs the notebooks with their small settings
(``PKPD_NOTEBOOK_SMALL=1``, a few minutes); ``--execute off`` renders their code without
outputs (the test suite does this: the notebooks' own test runs them).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

#: Files outside docs/ that pages include, and where the staged copy goes.
INCLUDES = {
    ROOT / "README.md": "_includes/README.md",
    ROOT / "priors" / "README.md": "_includes/priors.md",
    ROOT / "datasets" / "README.md": "_includes/datasets.md",
}


def stage(dest: Path) -> None:
    """Copy the site's sources into ``dest`` (emptied first)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(DOCS, dest, ignore=shutil.ignore_patterns("build.py", "__pycache__"))
    (dest / "tutorials").mkdir(exist_ok=True)
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(nb, dest / "tutorials" / nb.name)
    for src, rel in INCLUDES.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def build(out: Path, execute: str = "force", quiet: bool = False) -> Path:
    """Build the site into ``out/html``; returns the path of its ``index.html``."""
    from sphinx.cmd.build import build_main

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = out / "source"
    stage(source)
    env = {"PKPD_DOCS_EXECUTE": execute}
    if execute != "off":
        # the notebooks' small settings, their outputs outside the checkout
        env.update(PKPD_NOTEBOOK_SMALL="1", PKPD_NOTEBOOK_OUT=str(out / "notebook_outputs"))
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    tmp = Path(tempfile.mkdtemp(prefix="html.", dir=out))
    try:
        args = [
            "-b",
            "html",
            "-E",
            "-W",
            "--keep-going",
            "-d",
            str(out / "doctrees"),
            str(source),
            str(tmp),
        ]
        if quiet:
            args.insert(0, "-q")
        rc = build_main(args)
        if rc != 0:
            raise SystemExit(f"the documentation did not build (sphinx exit {rc}); see above")
        final = out / "html"
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out / "html" / "index.html"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "build" / "docs"), help="output folder")
    p.add_argument(
        "--execute",
        choices=("force", "off"),
        default="force",
        help="run the notebooks (force) or show their code only (off)",
    )
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    index = build(Path(args.out), args.execute, args.quiet)
    print(f"documentation: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
