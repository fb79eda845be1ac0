"""The report as one self-contained HTML page: the markdown fragments rendered, plots embedded."""

from __future__ import annotations

import base64
import html
from pathlib import Path

STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
         "td{border:1px solid #ccc;padding:3px 8px;font-size:13px}tr:first-child td{font-weight:bold}"
         "img{max-width:100%}")


def fragment(lines: list[str]) -> str:
    """Markdown lines (headings, bullet lines, tables, paragraphs) -> HTML; image lines are left out (the
    page embeds the plots itself)."""
    body, table = [], []
    for line in lines + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                table.append("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>"
                                              for c in line.strip("|").split("|")) + "</tr>")
            continue
        if table:
            body.append("<table>" + "".join(table) + "</table>")
            table = []
        for prefix, tag in (("### ", "h3"), ("## ", "h2"), ("# ", "h1"), ("- ", "li")):
            if line.startswith(prefix):
                body.append(f"<{tag}>{html.escape(line[len(prefix):])}</{tag}>")
                break
        else:
            if line.strip() and not line.startswith("!["):
                body.append(f"<p>{html.escape(line)}</p>")
    return "".join(body)


def page(title: str, lines: list[str], plots: dict[str, Path]) -> str:
    images = "".join(
        f'<h3>{html.escape(k)}</h3><img alt="{html.escape(k)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">' for k, p in plots.items())
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{fragment(lines)}{images}</body></html>\n")
