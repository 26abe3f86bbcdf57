"""The self-contained HTML page of a simulation-based calibration (``pkpd sbc --report``)."""

from __future__ import annotations

import json
from pathlib import Path

from pkpd.report.html import document, esc, figure_png, img_tag, key_value_table, table


def sbc_report(result, out="SBC.html", *, title: str | None = None) -> Path:
    """Write the SBC page: settings, the verdict per quantity, ECDF difference plots with
    simultaneous bands and rank histograms (:mod:`pkpd.diagnostics.sbc`). Written
    atomically; every string from the user is escaped."""
    from pkpd._files import atomic_write
    from pkpd.diagnostics.sbc import _as_sbc, sbc_ecdf, sbc_ranks, sbc_table

    r = _as_sbc(result)
    settings = json.loads(r.attrs["settings"])
    tab = sbc_table(r)
    bad = tab.loc[tab["verdict"] == "suspicious", "quantity"].tolist()
    n = r.sizes["replicate"]
    div = int((r["divergences"] > 0).sum())
    if bad:
        summary = (
            f'<p class="error">{len(bad)} of {len(tab)} quantities look miscalibrated: '
            f"{esc(', '.join(bad))}. Read their ECDF plots below: a ∩ shape means posteriors "
            "too wide, a ∪ or S shape too narrow, a drift one way a bias.</p>"
        )
    else:
        summary = (
            f'<p class="note">No quantity leaves its band: with {n} replicates nothing '
            "shows miscalibration (small effects need more replicates).</p>"
        )
    notes = []
    if div:
        notes.append(f"{div} of {n} replicates' fits had divergent transitions.")
    if float(r.attrs.get("low_ess_share", 0.0)) > 0.1:
        notes.append(
            f"{100 * float(r.attrs['low_ess_share']):.0f}% of the (replicate, quantity) pairs "
            f"had a bulk ESS below the {settings['ranks']} draws ranked: their draws are "
            "autocorrelated, which makes extreme ranks rarer (the test then leans towards "
            "'calibrated'); run longer chains or rank fewer draws."
        )
    body = [
        '<h2 id="summary">Summary</h2>',
        summary,
        "".join(f'<p class="warning">{esc(x)}</p>' for x in notes),
        key_value_table(
            [
                ("model", r.attrs.get("model", settings.get("model"))),
                ("design", r.attrs.get("design_source", "")),
                ("replicates", n),
                (
                    "fit",
                    f"{settings['method']}, {settings['chains']} chains x "
                    f"({settings['warmup']} + {settings['draws']}), "
                    f"parameterization {settings['parameterization']}",
                ),  # fmt: skip
                ("ranks", f"0..{settings['ranks']} (draws thinned evenly)"),
                ("seed", settings["seed"]),
                ("test", r.attrs.get("test", "")),
            ]
        ),
        '<h2 id="verdicts">Verdict per quantity</h2>',
        table(tab, index=False),
        '<h2 id="ecdf">ECDF difference plots</h2>',
        "<figure>" + img_tag(figure_png(sbc_ecdf(r)), "ECDF difference plots") + "</figure>",
        '<h2 id="ranks">Rank histograms</h2>',
        "<figure>" + img_tag(figure_png(sbc_ranks(r)), "rank histograms") + "</figure>",
    ]
    priors = r.attrs.get("priors_toml", "")
    if priors:
        body += ['<h2 id="priors">Priors</h2>', f"<pre>{esc(priors)}</pre>"]
    toc = [("summary", "Summary"), ("verdicts", "Verdict per quantity"),
           ("ecdf", "ECDF difference plots"), ("ranks", "Rank histograms")]  # fmt: skip
    if priors:
        toc.append(("priors", "Priors"))
    text = document(title or f"pkpd SBC: {r.attrs.get('model', '')}", "".join(body), toc)
    out = Path(out)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return out
