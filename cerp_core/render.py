"""Tables as text: GitHub Markdown and booktabs LaTeX, from the frames of
:mod:`cerp_core.report`.

Cells arrive formatted (``0.1234 ± 0.0012``, bold as ``**...**``, the marks ``†``, ``§`` and
``‡`` of :func:`cerp_core.report.paper_table`); the renderers only lay them out and, for LaTeX,
escape them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

BOLD = re.compile(r"\*\*(.+?)\*\*")
LATEX_SPECIALS = {c: "\\" + c for c in "&%$#_{}"} | {
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "\\": r"\textbackslash{}",
}


def _label(value: object) -> str:
    """A header or index entry as text; tuples (levels of a MultiIndex) joined by spaces."""
    if isinstance(value, tuple):
        return " ".join(_label(v) for v in value)
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table: index levels first, column levels joined by spaces."""
    header = [_label(name or "") for name in table.index.names] + [_label(c) for c in table.columns]
    align = ["---"] * table.index.nlevels + ["---:"] * len(table.columns)
    lines = [header, align]
    for index, values in zip(table.index, table.itertuples(index=False), strict=True):
        keys = index if isinstance(index, tuple) else (index,)
        lines.append([_label(k) for k in keys] + [_label(v) for v in values])
    return "\n".join(
        "| " + " | ".join(cell.replace("|", r"\|") for cell in line) + " |" for line in lines
    )


def _latex_cell(value: object) -> str:
    """Escape LaTeX specials; Markdown bold becomes ``\\textbf`` and ``±`` becomes ``$\\pm$``."""
    text = "".join(LATEX_SPECIALS.get(c, c) for c in _label(value))
    text = BOLD.sub(r"\\textbf{\1}", text).replace("±", r"$\pm$")
    return text.replace("†", r"$^\dagger$").replace("‡", r"$^\ddagger$").replace("§", r"\S{}")


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular``: a spanning header per budget, a rule between panels, repeated
    index entries left blank (needs ``\\usepackage{booktabs}``)."""
    levels = table.index.nlevels
    columns = table.columns if isinstance(table.columns, pd.MultiIndex) else None
    lines = [rf"\begin{{tabular}}{{{'l' * levels}{'r' * len(table.columns)}}}", r"\toprule"]
    names = [_latex_cell(name or "") for name in table.index.names]
    if columns is None:
        lines.append(" & ".join(names + [_latex_cell(c) for c in table.columns]) + r" \\")
    else:
        spans = [(top, len(list(group))) for top, group in _runs(columns.get_level_values(0))]
        top = [""] * levels + [rf"\multicolumn{{{n}}}{{c}}{{{_latex_cell(v)}}}" for v, n in spans]
        rules, start = [], levels + 1
        for _, n in spans:
            rules.append(rf"\cmidrule(lr){{{start}-{start + n - 1}}}")
            start += n
        lower = [_label(c[1:]) for c in columns]
        lines += [" & ".join(top) + r" \\", " ".join(rules)]
        lines.append(" & ".join(names + [_latex_cell(c) for c in lower]) + r" \\")
    lines.append(r"\midrule")
    previous: tuple = ()
    for index, values in zip(table.index, table.itertuples(index=False), strict=True):
        keys = index if isinstance(index, tuple) else (index,)
        if previous and keys[:-1] != previous[:-1]:
            lines.append(r"\midrule")
        shown = [
            "" if previous[: i + 1] == keys[: i + 1] else _latex_cell(key)
            for i, key in enumerate(keys)
        ]
        lines.append(" & ".join(shown + [_latex_cell(v) for v in values]) + r" \\")
        previous = keys
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _runs(values: Sequence[object]) -> list[tuple[object, list[object]]]:
    """Consecutive equal values grouped: ``[a, a, b] -> [(a, [a, a]), (b, [b])]``."""
    groups: list[tuple[object, list[object]]] = []
    for value in values:
        if groups and groups[-1][0] == value:
            groups[-1][1].append(value)
        else:
            groups.append((value, [value]))
    return groups
