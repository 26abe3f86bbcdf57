"""The documentation site (issue 26, item 3): ``docs/build.py`` builds it with Sphinx, warnings
as errors (a missing include, a broken cross-reference or an unreadable docstring fails);
every internal link and image of every page points at a file (and anchor) that exists; two
pages render in headless Chromium with their stylesheets and images loaded and nothing fetched
from outside. The notebooks are rendered without running them here (their own test runs them)."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import browser
from paths import ROOT

pytest.importorskip("sphinx")
pytest.importorskip("myst_nb")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as ``make docs`` builds it (a process of its own), notebooks not run."""
    out = tmp_path_factory.mktemp("docs")
    res = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "build.py"), "--out", str(out), "--execute", "off",
         "--quiet"],
        capture_output=True, text=True, timeout=3600,  # a hang guard, not a time limit
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    assert (out / "html" / "index.html").is_file()
    return out / "html"


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        for key in ("href", "src"):
            if a.get(key):
                self.refs.append((tag, a[key]))


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


PAGES = ["index", "getting-started", "data", "models", "priors", "fitting", "simulation",
         "report", "cli", "coming-from", "api", "datasets", "architecture",
         "tutorials/01_fit", "tutorials/02_simulate"]  # fmt: skip


def test_every_page_is_built_and_holds_what_it_promises(site):
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), page
    text = {p: (site / f"{p}.html").read_text(encoding="utf-8") for p in PAGES}
    # the README sections the pages include arrived (column table, units, CLI help, API)
    assert "AMTU" in text["data"] and "time h, amounts mg" in text["data"]
    assert "usage: pkpd fit" in text["cli"] and "--covariate" in text["cli"]
    assert 'id="pkpd.fit"' in text["api"] and 'id="pkpd.models.ODEModel"' in text["api"]
    assert "[parameters.cl]" in text["priors"] or "parameters.cl" in text["priors"]
    assert "PKPD_NOTEBOOK_SMALL" in text["tutorials/01_fit"]  # the notebook's code
    assert "../shared" not in "".join(text.values())  # the site stands alone


def test_internal_links_and_images_resolve(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= len(PAGES)
    ids = {}
    broken = []
    for page in pages:
        for _tag, ref in _parse(page).refs:
            parts = urlsplit(ref)
            if parts.scheme in ("http", "https", "mailto", "data", "javascript"):
                continue
            if parts.scheme or parts.netloc:
                broken.append((page.name, ref, "unexpected scheme"))
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append((page.relative_to(site), ref, "no such file"))
                continue
            if parts.fragment and target.suffix == ".html":
                if target not in ids:
                    ids[target] = _parse(target).ids
                if parts.fragment not in ids[target]:
                    broken.append((page.relative_to(site), ref, "no such anchor"))
    assert not broken, broken[:20]


_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var sheets = Array.prototype.slice.call(document.querySelectorAll('link[rel=stylesheet]'));
  var external = performance.getEntriesByType('resource').map(function (r) { return r.name; })
    .filter(function (n) { return n.indexOf('file:') !== 0 && n.indexOf('data:') !== 0; });
  var out = document.createElement('pre');
  out.id = 'pkpd-render-check';
  out.textContent = JSON.stringify({
    images: imgs.length,
    loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    sheets: sheets.length,
    sheets_loaded: sheets.filter(function (l) { return l.sheet !== null; }).length,
    external: external,
    title: (document.querySelector('h1') || {}).textContent || '',
    nav: document.querySelectorAll('.sidebar-tree a').length,
    height: document.body.scrollHeight,
    font: getComputedStyle(document.body).fontFamily});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(
    browser.chromium() is None, reason="chromium is not installed (make test installs it)"
)
@pytest.mark.parametrize("page, title", [("index", "pkpd"), ("models", "Models")])
def test_pages_render_in_headless_chromium(site, page, title, tmp_path):
    info = browser.probe(site / f"{page}.html", _PROBE, tmp_path / "profile")
    assert info["title"].strip().rstrip("#¶").strip() == title, info
    assert info["images"] == info["loaded"], info
    assert info["sheets"] >= 2 and info["sheets_loaded"] == info["sheets"], info
    assert info["external"] == [], info
    assert info["nav"] >= len(PAGES) - 2, info  # the sidebar lists the pages
    assert info["height"] > 1000, info
    # the theme's stylesheet applied: furo sets a sans-serif stack, not the browser's serif
    assert "serif" not in info["font"].replace("sans-serif", ""), info
