"""Self-contained HTML: escaped text, tables from DataFrames, figures as base64 PNG.

Nothing in the output refers to anything outside the file: CSS is inline, figures are
``data:image/png;base64`` URIs, and every string that comes from the user (subject IDs, study
names, file names, priors text) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; line-height: 1.45; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
nav ol { columns: 2; font-size: 0.95em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0 1em; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; white-space: nowrap; }
th { background: #f0f0f3; }
td.text, th.text { text-align: left; white-space: normal; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
figure { margin: 1em 0 1.6em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f6f6f8; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.note { background: #eef5ff; border-left: 4px solid #4a90d9; padding: 0.5em 0.8em; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 0.8em; }
.error { background: #fdecea; border-left: 4px solid #d9534f; padding: 0.5em 0.8em; }
.scroll { overflow-x: auto; max-width: 100%; }
.meta td { text-align: left; white-space: normal; }
"""


def esc(x) -> str:
    """HTML-escaped text of any value (quotes included)."""
    return html.escape(str(x), quote=True)


def figure_png(fig, *, dpi: int = 96) -> bytes:
    """PNG bytes of a matplotlib figure (drawn by Agg whatever the active backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{b64}" alt="{esc(alt)}">'


def format_value(v) -> str:
    """Numbers to 4 significant digits, NaN/None empty, everything else as text."""
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return "yes" if v else "no"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return ""
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        return f"{f:.4g}"
    return str(v)


def table(df: pd.DataFrame, *, caption: str | None = None, index: bool = True) -> str:
    """An HTML table of a DataFrame; every cell and header is escaped."""
    cols = list(df.columns)
    head = []
    if index:
        names = [n if n is not None else "" for n in (df.index.names or [""])]
        head += [f'<th class="text">{esc(n)}</th>' for n in names]
    head += [f"<th>{esc(c)}</th>" for c in cols]
    rows = []
    for idx, r in zip(df.index, df.itertuples(index=False), strict=True):
        cells = []
        if index:
            vals = idx if isinstance(idx, tuple) else (idx,)
            cells += [f'<td class="text">{esc(format_value(v))}</td>' for v in vals]
        for v in r:
            cls = ' class="text"' if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{esc(format_value(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (
        '<div class="scroll"><table>'
        + f"{cap}<thead><tr>{''.join(head)}</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div>"
    )


def key_value_table(items) -> str:
    rows = "".join(
        f'<tr><th class="text">{esc(k)}</th><td class="text">{esc(format_value(v))}</td></tr>'
        for k, v in items
    )
    return f'<table class="meta"><tbody>{rows}</tbody></table>'


def document(title: str, body: str, toc: list[tuple[str, str]]) -> str:
    """The whole HTML document (``toc``: (anchor, title) pairs, already plain text)."""
    nav = "".join(f'<li><a href="#{esc(a)}">{esc(t)}</a></li>' for a, t in toc)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{esc(title)}</h1>"
        f"<nav><ol>{nav}</ol></nav>{body}</main></body></html>\n"
    )
