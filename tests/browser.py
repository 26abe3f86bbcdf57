"""Headless Chromium for the tests that check a page renders (the report, the documentation).

``make test`` installs Debian's ``chromium`` where it can; elsewhere those tests are skipped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


#: No network (every host name fails to resolve), no GPU, no first-run chores; JavaScript timers
#: run on virtual time so ``load`` handlers finish before the DOM is dumped.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--virtual-time-budget=15000",
]


def run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    """Chromium with :data:`FLAGS`, a fresh profile and ``args``."""
    return subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=1800,  # a hang guard, not a time limit
    )  # fmt: skip


def probe(page: Path, script: str, profile: Path) -> dict:
    """Open ``page`` with ``script`` added before ``</body>`` (a copy next to it, so relative
    links resolve the same) and return the JSON the script writes into
    ``<pre id="pkpd-render-check">``."""
    page = Path(page).resolve()
    text = page.read_text(encoding="utf-8")
    copy = page.with_name(page.stem + ".probe.html")
    copy.write_text(text.replace("</body>", script + "</body>"), encoding="utf-8")
    try:
        res = run(["--dump-dom", copy.as_uri()], profile)
    finally:
        copy.unlink()
    m = re.search(r'<pre id="pkpd-render-check">(.*?)</pre>', res.stdout, re.S)
    assert m, f"no probe output for {page.name}; chromium said: {res.stderr[-2000:]}"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
