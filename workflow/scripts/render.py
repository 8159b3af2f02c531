"""Tables -> files: each table as numeric CSV and formatted Markdown, LaTeX (booktabs) and HTML, with its notes."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd
from tables import build_tables

def to_markdown(df: pd.DataFrame, notes: list[str] = ()) -> str:
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n" + "".join(f"\n{note}\n" for note in notes)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SYMBOLS = {"±": r"$\pm$", "−": r"$-$", "†": r"$^\dagger$"}


def _tex(value: Any) -> str:
    return "".join(_LATEX_SYMBOLS.get(ch, _LATEX.get(ch, ch)) for ch in str(value))


def to_latex(df: pd.DataFrame, notes: list[str] = ()) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}), the notes as footnote-size lines below it."""
    lines = [r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule",
             " & ".join(_tex(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"] + [r"\par{\footnotesize " + _tex(note) + "}" for note in notes]
    return "\n".join(lines) + "\n"


def to_html(df: pd.DataFrame, notes: list[str] = ()) -> str:
    """A standalone HTML table with its notes (the report shows HTML results inline)."""
    style = "<style>table{border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:3px 8px}</style>"
    below = "".join(f"<p style='font:12px sans-serif'>{html.escape(note)}</p>" for note in notes)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{style}</head><body>{df.to_html(index=False)}{below}"
            "</body></html>\n")


def write_tables(records: pd.DataFrame, axes: list[str], out_dir: Path, reference: str | None = "random",
                 published: pd.DataFrame | None = None, primary: tuple[str, ...] = ("robust",)) -> list[Path]:
    """Every table as NAME.csv (numeric) and NAME.md / .tex / .html (formatted, with notes); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in build_tables(records, axes, reference, published, primary).items():
        texts = {"csv": table.numeric.to_csv(index=False), "md": to_markdown(table.shown, table.notes),
                 "tex": to_latex(table.shown, table.notes), "html": to_html(table.shown, table.notes)}
        for suffix, text in texts.items():
            path = out_dir / f"{name}.{suffix}"
            path.write_text(text)
            written.append(path)
    return written
