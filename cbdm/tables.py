"""Rendering of the report's sections (tables as data) to Markdown, LaTeX and self-contained HTML.

A section is a heading, an explanation, a table (sample sizes already folded into headers or
cells), an optional footer and the HTML page it belongs to. Nothing here computes a number: the
writers only format what report.py hands them.
"""
from __future__ import annotations

import html
import math
import re
from typing import NamedTuple

import pandas as pd

# Characters (cells plus column gaps) of a footnotesize row that fit a 16 cm text width, with the
# little shrinking \resizebox does gracefully; wider tables are split by scope.
TEX_MAX_CHARS = 150
TEX_COLUMN_GAP = 3
TEX_MAX_ROWS = 50  # rows per LaTeX table (a float does not break across pages; 50 footnotesize rows fit one)
ID_COLUMNS = ("variant", "guidance", "runs", "class", "group", "training images", "baseline", "scope", "metric")


class Section(NamedTuple):
    """One table of the report; `page` names the HTML page (report item) that shows it."""
    heading: str
    explanation: str
    table: pd.DataFrame
    footer: str = ""
    page: str = "main"


def scale_label(value) -> str:
    """A guidance scale as printed: 1.0, 1.6, 0.25 (never 1.000000)."""
    value = float(value)
    return f"{value:.1f}" if value.is_integer() else f"{value:g}"


def significant(value: float, digits: int = 3) -> str:
    """`digits` significant digits as format 'g' writes them, without its scientific notation
    between 1e-4 and 1e6 (a KID x 1e3 of 3342 prints as 3340, not 3.34e+03)."""
    if value == 0 or not 1e-4 <= abs(value) < 1e6:
        return f"{value:.{digits}g}"
    decimals = digits - 1 - math.floor(math.log10(abs(value)))
    text = f"{round(value, decimals):.{max(decimals, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text  # as 'g' does: 11, not 11.0


def cell_text(value) -> str:
    """A table cell as printed: floats to 3 significant digits, missing values blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return significant(value)
    return str(value)


def text_frame(table: pd.DataFrame) -> pd.DataFrame:
    """Every cell as printed (see `cell_text`)."""
    return table.astype(object).map(cell_text) if len(table.columns) else table


# --- Markdown ---------------------------------------------------------------------------------

def markdown(sections: list[Section], preamble: str, card: list[tuple[str, str]], notes: list[str]) -> str:
    """The whole report as Markdown: preamble, protocol card, every section, the notes."""
    lines = [preamble, "", "### Protocol", ""] + [f"- **{key}**: {value}" for key, value in card] + [""]
    for s in sections:
        printed = text_frame(s.table).to_markdown(index=False, disable_numparse=True)  # cells as formatted
        lines += [f"## {s.heading}", "", s.explanation, "", printed, ""]
        lines += [s.footer, ""] if s.footer else []
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


# --- LaTeX ------------------------------------------------------------------------------------

TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               # Not themselves in pdflatex's default (OT1) encoding: '<' would print as '¡'.
               "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
               "±": r"$\pm$", "×": r"$\times$", "→": r"$\rightarrow$", "≥": r"$\geq$", "≤": r"$\leq$"}


def tex_escape(text: str) -> str:
    """Plain text -> LaTeX: special characters escaped, '->' an arrow, other non-ASCII dropped
    to '?' so that pdflatex never stops on a character it has no glyph for."""
    text = str(text).replace("->", "→").replace("`", "")
    text = re.sub(r"(^|[\s(\[])'", "\\1\x00", text)  # an opening quote, typeset as `
    out = "".join(TEX_SPECIAL.get(ch, ch) for ch in text).replace("\x00", "`")
    return "".join(ch if ord(ch) < 128 else "?" for ch in out)


def _scope_of(column: str) -> str:
    """The group a value column belongs to: its last word before the folded '(n=...)'."""
    return column.split(" (n=")[0].split()[-1]


def _width(table: pd.DataFrame, column: str) -> int:
    """Printed characters of a column: its widest cell or header line, plus the gap."""
    cells = [len(cell_text(v)) for v in table[column]]
    return max([*cells, *map(len, column.split(" (n="))]) + TEX_COLUMN_GAP


def column_chunks(table: pd.DataFrame) -> list[list[str]]:
    """The table's columns in pieces narrow enough for a page: all of them when they fit, else
    the identifying columns in every piece and the value columns packed by scope (all / head /
    tail, or per variant)."""
    if sum(_width(table, c) for c in table.columns) <= TEX_MAX_CHARS:
        return [list(table.columns)]
    ids = [c for c in table.columns if c in ID_COLUMNS]
    groups: list[list[str]] = []
    for col in (c for c in table.columns if c not in ID_COLUMNS):
        if groups and _scope_of(groups[-1][-1]) == _scope_of(col):
            groups[-1].append(col)
        else:
            groups.append([col])
    room = TEX_MAX_CHARS - sum(_width(table, c) for c in ids)
    chunks: list[list[str]] = []
    for group in groups:
        if chunks and sum(_width(table, c) for c in chunks[-1] + group) <= room:
            chunks[-1] += group
        else:
            chunks.append(list(group))
    return [ids + chunk for chunk in chunks] or [ids]


def _tex_header(columns: list[str]) -> list[str]:
    """Header rows: the column name, and the folded '(n=...)' on a second row where there is one."""
    names = [tex_escape(c.split(" (n=")[0]) for c in columns]
    sizes = [tex_escape("n=" + c.split(" (n=")[1].rstrip(")")) if " (n=" in c else "" for c in columns]
    rows = [" & ".join(names) + r" \\"]
    if any(sizes):
        rows.append(" & ".join(sizes) + r" \\")
    return rows


def tex_table(heading: str, explanation: str, table: pd.DataFrame, label: str, footer: str = "") -> str:
    """One captioned, labelled LaTeX table environment, shrunk to the text width where wider;
    `footer` printed under the table (it qualifies the numbers, so it must reach the PDF)."""
    text = text_frame(table)
    body = [" & ".join(tex_escape(v) for v in row) + r" \\" for row in text.itertuples(index=False)]
    spec = "".join("l" if c in ID_COLUMNS else "r" for c in table.columns)
    caption = tex_escape(heading) + (". " + tex_escape(explanation) if explanation else "")
    return "\n".join([
        r"\begin{table}[htbp]", r"\centering", r"\footnotesize",
        rf"\caption{{{caption}}}", rf"\label{{{label}}}", r"\smallskip",
        # Shrinks a table only when it is wider than the text (graphicx is part of every LaTeX).
        r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}", r"\hline", *_tex_header(list(table.columns)), r"\hline", *body,
        r"\hline", r"\end{tabular}}",
        *([rf"\par\smallskip{{\scriptsize {tex_escape(footer)}}}"] if footer else []), r"\end{table}", ""])


def tex_parts(table: pd.DataFrame) -> list[pd.DataFrame]:
    """The table in pieces that fit a page: columns split by column_chunks, rows by TEX_MAX_ROWS."""
    return [table.iloc[start:start + TEX_MAX_ROWS][columns] for columns in column_chunks(table)
            for start in range(0, max(len(table), 1), TEX_MAX_ROWS)]


def tex_notes(notes: list[str]) -> list[str]:
    """The report's notes as a list after the tables: they say why a cell is n/a."""
    if not notes:
        return []
    return [r"\begin{flushleft}\footnotesize", r"\textbf{Notes} (why a value is n/a, and how some were made):",
            r"\begin{itemize}", *[rf"\item {tex_escape(note)}" for note in notes], r"\end{itemize}",
            r"\end{flushleft}", ""]


def latex(sections: list[Section], preamble: str, notes: list[str] = ()) -> str:
    """One `table` environment per section (split into parts when too wide or too long), then
    the notes; needs only graphicx. Input it into a document: \\usepackage{graphicx} ...
    \\input{table.tex}."""
    out = [f"% {line}" for line in preamble.splitlines()] + ["% Needs \\usepackage{graphicx}.", ""]
    for i, s in enumerate(sections):
        if s.table.empty:
            continue
        parts = tex_parts(s.table)
        for j, part in enumerate(parts):
            numbered = f" (part {j + 1} of {len(parts)})" if len(parts) > 1 else ""
            label = f"tab:{re.sub('[^a-z0-9]+', '-', s.heading.lower()).strip('-')[:40]}-{i}-{j}"
            out.append(tex_table(s.heading + numbered, s.explanation if j == 0 else "", part, label,
                                 s.footer if j == len(parts) - 1 else ""))
    return "\n".join(out + tex_notes(list(notes)))


# --- HTML -------------------------------------------------------------------------------------

HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}
table{border-collapse:collapse;margin:0.5em 0 2em 0;font-size:0.9em}
caption{caption-side:top;text-align:left;padding:0.3em 0;max-width:70em}
th,td{border:1px solid #bbb;padding:0.25em 0.6em;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}
th small{font-weight:normal;color:#444}
td.t{text-align:left}
table.card td{text-align:left;white-space:normal}
th{background:#eef;cursor:pointer}
tr:nth-child(even) td{background:#f7f7f7}
.footer{font-size:0.85em;color:#444;margin-top:-1.5em}
"""

# Click a header to sort by that column (numbers by their leading value, the rest as text).
HTML_SORT = """
document.querySelectorAll('table.sortable th').forEach(function(th, k){th.addEventListener('click', function(){
 var t=th.closest('table'), b=t.tBodies[0], rows=Array.from(b.rows), i=th.cellIndex, up=th.dataset.up!=='1';
 var key=function(r){var s=r.cells[i].textContent, v=parseFloat(s); return isNaN(v)?s:v;};
 rows.sort(function(x,y){var a=key(x), c=key(y); var r=(typeof a===typeof c)?(a<c?-1:a>c?1:0):
  (typeof a==='number'?-1:1); return up?r:-r;});
 th.dataset.up=up?'1':'0'; rows.forEach(function(r){b.appendChild(r);});});});
"""


def _html_header(column: str) -> str:
    """A header cell; a folded '(n=...)' goes on its own line, so wide tables stay readable."""
    name, _, size = column.partition(" (n=")
    return html.escape(name) + (f"<br><small>n={html.escape(size.rstrip(')'))}</small>" if size else "")


def _html_cell(text: str) -> str:
    """Numbers right-aligned (the default), words left-aligned."""
    numeric = re.match(r"^[-+]?(\d|\.\d)", text) is not None
    return f"<td>{html.escape(text)}</td>" if numeric or not text else f'<td class="t">{html.escape(text)}</td>'


def html_table(caption: str, table: pd.DataFrame, table_id: str = "") -> str:
    """A sortable HTML table with its caption (HTML, already escaped by the caller)."""
    text = text_frame(table)
    head = "".join(f"<th>{_html_header(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in text.itertuples(index=False))
    ident = f' id="{table_id}"' if table_id else ""
    return (f'<table class="sortable"{ident}><caption>{caption}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def html_section(s: Section, index: int) -> str:
    """One section as HTML: the captioned table (id t<index>), or a line saying it has no rows."""
    caption = f"<b>{html.escape(s.heading)}</b>"
    if s.explanation:
        caption += f"<br>{html.escape(s.explanation)}"
    footer = f'<p class="footer">{html.escape(s.footer)}</p>' if s.footer else ""
    body = html_table(caption, s.table, f"t{index}") if len(s.table) else f"<p>{caption}: no rows.</p>"
    return body + footer


def html_card(card: list[tuple[str, str]]) -> str:
    """The protocol card: what was trained, sampled and compared, as a two-column table."""
    frame = pd.DataFrame(card, columns=["item", "setting"])
    return html_table("<b>Protocol card</b>", frame).replace('class="sortable"', 'class="card"')


def html_page(title: str, intro: str, body: list[str]) -> str:
    """A self-contained page (inline style and script, no network), as Snakemake's report shows it."""
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head><body>",
        f"<h2>{html.escape(title)}</h2>", f"<p>{html.escape(intro)}</p>" if intro else "", *body,
        f"<script>{HTML_SORT}</script>", "</body></html>", ""])
