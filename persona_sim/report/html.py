"""report.html: the run's report.md as one self-contained page (plots embedded as PNG data URIs).

The page is made from the Markdown report, so the two never disagree; only the
subset report.md uses is understood: headings, paragraphs, bullet lists, pipe
tables, images, **bold**, *italic* and `code`.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em;display:block;max-width:100%;overflow-x:auto}
@media (max-width:900px){table{font-size:.78em}th,td{padding:.2em .35em!important}}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;
display:block;margin:1em 0;border:1px solid #eee}code{background:#f5f5f5;padding:0 .2em}"""


def _inline(text: str) -> str:
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*]+)\*(?![\w*])", r"<em>\1</em>", text)


def _image(alt: str, name: str, base: Path) -> str:
    path = base / name
    if not path.exists():
        return f"<p>(missing plot {html.escape(name)})</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in r.strip().strip("|").split("|")] for r in rows]
    head, body = cells[0], cells[2:]
    out = ["<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out) + "</tbody></table>"


def markdown_to_html(markdown: str, base: Path, title: str) -> str:
    parts, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            parts.append(_table(lines[i:j]))
            i = j
            continue
        if m := re.match(r"(#+) (.*)", line):
            level = min(len(m.group(1)), 6)
            parts.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif m := re.match(r"!\[([^\]]*)\]\(([^)]+)\)", line):
            parts.append(_image(m.group(1), m.group(2), base))
        elif line.startswith("- "):
            j = i
            while j < len(lines) and lines[j].startswith("- "):
                j += 1
            parts.append("<ul>" + "".join(f"<li>{_inline(l[2:])}</li>" for l in lines[i:j]) + "</ul>")
            i = j
            continue
        elif line.strip():
            parts.append(f"<p>{_inline(line)}</p>")
        i += 1
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def write_html(out: Path, markdown: str, title: str) -> Path:
    path = out / "report.html"
    path.write_text(markdown_to_html(markdown, out, title))
    return path
