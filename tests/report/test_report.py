"""The HTML report: self-contained, escaped, complete; renders in headless Chromium; CLI.

The fit has hostile names everywhere a user string can enter the report: subject IDs and study
names with markup, a data file name with ``<``, ``>`` and ``&``, a priors file whose comment
holds a ``<script>`` tag; the simulation has a regimen label with markup.

Two checks of the output:

* always: the HTML is parsed; every ``<img>`` is a ``data:image/png`` URI that decodes to a
  valid PNG; nothing refers to anything outside the file (no ``http(s)://``, no ``src``/``href``
  other than data URIs and in-page anchors, no ``<script>``, ``<link>`` or CSS ``url()``);
  user strings appear only escaped;
* where Chromium is installed (``make test`` installs Debian's ``chromium`` when it can), the
  report is opened headless with networking off and a probe script counts the images that
  loaded and any resource fetched from outside the page.
"""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

import pkpd
from pkpd.cli import main
from pkpd.report import build_sections

import browser
from studies import PRIORS, fake_simulation, quick_fit, simulate_study

HOSTILE_ID = "<b>S{}</b>&"
HOSTILE_STUDIES = ("A<i>&", "B<script>")
HOSTILE_FILE = "we<ird>&name.csv"
HOSTILE_REGIMEN = "<img src=x onerror=alert(1)> 75 mg"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    df = simulate_study(6, ids=lambda i: HOSTILE_ID.format(i), studies=HOSTILE_STUDIES)
    data = d / HOSTILE_FILE
    df.to_csv(data, index=False)
    priors = d / "priors.toml"
    priors.write_text(PRIORS)
    fit = quick_fit(str(data), priors)
    fit_path = pkpd.save_fit(fit, d / "fit.nc")
    sim = fake_simulation()
    regs = list(sim.regimen.values)
    sim = sim.assign_coords(regimen=[regs[0], HOSTILE_REGIMEN, regs[2]])
    sim_path = d / "sim.nc"
    sim.to_netcdf(sim_path)
    return {"dir": d, "fit": fit_path, "sim": sim_path, "data": data}


@pytest.fixture(scope="module")
def report_html(files):
    out = pkpd.report(
        files["fit"],
        files["sim"],
        files["dir"] / "REPORT.html",
        n_replicates=40,
        targets=["s6k_inhibition_trough_ss >= 80"],
        strict=True,
    )
    return out, out.read_text(encoding="utf-8")


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(text):
    p = _Collector()
    p.feed(text)
    p.close()
    return p


def test_report_is_self_contained(report_html):
    _, text = report_html
    p = _parse(text)
    tags = [t for t, _ in p.tags]
    for banned in ("script", "link", "iframe", "object", "embed", "base"):
        assert banned not in tags, banned
    assert not re.search(r"https?://", text)
    assert "url(" not in text
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) >= 9  # 4 per endpoint, priors, 4 from the simulation
    for a in imgs:
        src = a["src"]
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        im = Image.open(io.BytesIO(png))
        im.verify()
        assert im.size[0] > 300 and im.size[1] > 150
    for _, a in p.tags:
        for k, v in a.items():
            if k in ("src", "href", "action", "srcset", "poster", "data"):
                assert v.startswith(("data:image/png;base64,", "#")), (k, v[:40])


def test_user_strings_are_escaped(report_html, files):
    _, text = report_html
    # raw markup from the data never reaches the document
    for raw in ("<b>S", "<i>&", "<script>", "<ird>", HOSTILE_REGIMEN[:10], "alert(1)</script>"):
        assert raw not in text, raw
    # ... and the escaped forms are there (IDs in the individual-fit titles are inside PNGs;
    # study names, the file name, the priors' comment and the regimen label are text)
    assert "A&lt;i&gt;&amp;" in text
    assert "B&lt;script&gt;" in text
    assert "we&lt;ird&gt;&amp;name.csv" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # priors file comment, escaped
    assert "&lt;img src=x onerror=alert(1)&gt; 75 mg" in text
    # the parsed text gives the user strings back exactly
    flat = "".join(_parse(text).text)
    assert "A<i>&" in flat and HOSTILE_FILE in flat and HOSTILE_REGIMEN in flat


def test_report_has_every_section(report_html):
    path, text = report_html
    p = _parse(text)
    ids = [a.get("id") for t, a in p.tags if t == "section"]
    assert ids == ["summary", "data", "parameters", "convergence", "gof", "vpc", "priors",
                   "simulation"]  # fmt: skip
    for caption in ("Goodness of fit, conc", "VPC, conc", "pcVPC, conc",
                    "Prior density (line) and posterior (histogram)",
                    "Simulated time courses by regimen", "Target attainment by regimen"):  # fmt: skip
        assert caption in text, caption
    assert 'class="error"' not in text
    assert "Laplace" in text  # the MAP fit's convergence note
    assert path.stat().st_mode & 0o044  # readable by others, like any written file


def test_sections_are_plain_objects_for_notebooks(files):
    from matplotlib.figure import Figure

    sections = build_sections(files["fit"], None, n_replicates=20, strict=True)
    kinds = {b.kind for s in sections for b in s.blocks}
    assert {"table", "figure", "table_kv", "pre", "note"} <= kinds
    figs = [b.content for s in sections for b in s.blocks if b.kind == "figure"]
    assert figs and all(isinstance(f, Figure) for f in figs)
    sim = next(s for s in sections if s.anchor == "simulation")
    assert "Simulation section absent" in sim.blocks[0].content


def test_a_failing_item_is_reported_not_fatal(files, monkeypatch):
    from pkpd import diagnostics as dx

    def broken(*a, **k):
        raise RuntimeError("boom <b>")

    monkeypatch.setattr(dx, "prior_posterior", broken)
    out = pkpd.report(files["fit"], None, files["dir"] / "partial.html", n_replicates=20)
    text = out.read_text()
    assert 'class="error"' in text and "boom &lt;b&gt;" in text
    with pytest.raises(RuntimeError, match="boom"):
        pkpd.report(files["fit"], None, files["dir"] / "p2.html", n_replicates=20, strict=True)


# -- headless Chromium ---------------------------------------------------------------------------
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var external = performance.getEntriesByType('resource').map(function (r) { return r.name; })
    .filter(function (n) { return n.indexOf('data:') !== 0; });
  var out = document.createElement('pre');
  out.id = 'pkpd-render-check';
  out.textContent = JSON.stringify({images: imgs.length, loaded: loaded, external: external,
    sections: document.querySelectorAll('section').length,
    height: document.body.scrollHeight});
  document.body.appendChild(out);
});
</script>"""


@pytest.mark.skipif(
    browser.chromium() is None, reason="chromium is not installed (make test installs it)"
)
def test_report_renders_in_headless_chromium(report_html, tmp_path):
    path, text = report_html
    info = browser.probe(path, _PROBE, tmp_path / "profile")
    n_img = text.count("<img ")
    assert info["images"] == n_img and info["loaded"] == n_img, info
    assert info["external"] == [] and info["sections"] == 8 and info["height"] > 5000
    # and a screenshot of the unmodified report is not blank
    shot = tmp_path / "shot.png"
    browser.run(["--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}",
                 path.as_uri()], tmp_path / "profile2")  # fmt: skip
    im = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert im.shape == (3000, 1200) and im.std() > 10


# -- command line -------------------------------------------------------------------------------
def test_cli_report(files, capsys):
    out = files["dir"] / "cli.html"
    rc = main(["report", str(files["fit"]), "--out", str(out), "--replicates", "20", "--quiet"])
    assert rc == 0 and out.stat().st_size > 10000
    said = capsys.readouterr().out
    assert "report written to" in said and "simulation section is absent" in said
    rc = main(["report", str(files["fit"]), "--sim", str(files["sim"]), "--out", str(out),
               "--replicates", "20", "--target", "s6k_inhibition_trough_ss >= 80", "--quiet"])  # fmt: skip
    assert rc == 0 and "Target attainment by regimen" in out.read_text()


def test_cli_report_bad_input(files, capsys, tmp_path):
    out = str(tmp_path / "r.html")
    assert main(["report", str(tmp_path / "nope.nc"), "--out", out]) == 2
    assert "no such fit file" in capsys.readouterr().err
    assert main(["report", str(files["fit"]), "--target", "x > 1", "--out", out]) == 2
    assert "needs a simulation" in capsys.readouterr().err
    rc = main(["report", str(files["fit"]), "--sim", str(files["sim"]), "--target",
               "nope >= 1", "--out", out])  # fmt: skip
    assert rc == 2 and "no metric 'nope'" in capsys.readouterr().err
    assert main(["report", str(files["fit"]), "--sim", str(files["fit"]), "--out", out]) == 2
    assert "not" in capsys.readouterr().err
