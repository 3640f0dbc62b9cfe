"""Rendering a convert report: a plain-text variant table, ``report.md`` and ``report.html``
(an inline SVG chart of size vs accuracy vs latency; no external assets)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

COLUMNS = (
    ("variant", "name", "{}"),
    ("size", "size_bytes", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("drop pp", "accuracy_drop", "{:+.2f}"),
    ("agree", "agreement", "{:.4f}"),
    ("max|diff|", "max_abs_diff", "{:.4f}"),
    ("p50 ms", "latency_p50_ms", "{:.4f}"),
    ("p95 ms", "latency_p95_ms", "{:.4f}"),
    ("load ms", "load_ms", "{:.1f}"),
)


def _cells(row: dict[str, Any], selected: str | None) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        value = row.get(key)
        if key == "size_bytes":
            out.append(human_size(int(value or 0)))
        elif key == "accuracy_drop":
            out.append(fmt.format(100 * float(value or 0.0)))
        elif key == "name":
            out.append(("* " if row["name"] == selected else "  ") + str(value))
        else:
            out.append(fmt.format(value) if value is not None else "-")
    out.append(",".join(row.get("flags") or []) or "")
    return out


def render_variant_table(report: dict[str, Any]) -> str:
    """A fixed-width text table of every variant (``*`` marks the selected one), with the choice,
    the reason each other variant was not chosen, skipped variants and the CPU measured on."""
    header = [c[0] for c in COLUMNS] + ["flags"]
    selected = report.get("selected")
    body = [_cells(r, selected) for r in report.get("variants", [])]
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i]) for i in range(len(header))]
    right = {1, 2, 3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    trained = report.get("trained", {})
    lines = [
        f"{report.get('name', '?')}: trained {trained.get('recipe', '?')} accuracy {trained.get('accuracy', 0):.4f}"
        f" on {report.get('measured', {}).get('test_rows', '?')} test rows;"
        f" latency at batch 1, {report.get('measured', {}).get('threads', 1)} thread, on {report.get('cpu', '?')}",
        line(header).rstrip(),
        line(["-" * w for w in widths]).rstrip(),
    ]
    lines += [line(b).rstrip() for b in body]
    sel = report.get("selection", {})
    lines.append(f"selected: {selected} ({sel.get('rule', '')})")
    for row in report.get("variants", []):
        if row["name"] != selected and row.get("rejected_because"):
            lines.append(f"  {row['name']}: {row['rejected_because']}")
    for row in report.get("variants", []):
        for note in row.get("notes", []):
            lines.append(f"  flag {row['name']}: slower than fp32 — {note}")
    for sk in report.get("skipped", []):
        lines.append(f"  skipped {sk['name']}: {sk['reason']}")
    return "\n".join(lines)


def human_size(n: int) -> str:
    for unit, div in (("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: the trained model, the variant table, the choice and the reasons."""
    trained = report.get("trained", {})
    head = [c[0].replace("|", "\\|") for c in COLUMNS] + ["flags"]
    out = [
        f"# Conversion report: {report.get('name')}",
        "",
        f"- trained model: `{trained.get('recipe')}` ({trained.get('framework')}), test accuracy"
        f" {trained.get('accuracy'):.4f}, macro-F1 {trained.get('f1_macro')}, ROC AUC {trained.get('roc_auc')}",
        f"- measured on: {report.get('cpu')} ({report.get('host', {}).get('machine')},"
        f" flags {', '.join(report.get('host', {}).get('flags', [])) or 'n/a'}); batch 1, one thread, after warm-up."
        " A device's latency is not the workstation's: measure on the board before trusting ratios.",
        f"- selected: **{report.get('selected')}** — {report.get('selection', {}).get('rule')}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for row in report.get("variants", []):
        cells = _cells(row, report.get("selected"))
        cells[0] = cells[0].strip()
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "## Why not the others", ""]
    for row in report.get("variants", []):
        if row["name"] != report.get("selected"):
            out.append(f"- `{row['name']}`: {row.get('rejected_because')}")
    notes = [(r["name"], n) for r in report.get("variants", []) for n in r.get("notes", [])]
    if notes:
        out += ["", "## Quantized variants slower than their float original", ""]
        out += [f"- `{name}`: {note}" for name, note in notes]
    if report.get("skipped"):
        out += ["", "## Skipped", ""]
        out += [f"- `{s['name']}`: {s['reason']}" for s in report["skipped"]]
    return "\n".join(out) + "\n"


def render_html(report: dict[str, Any]) -> str:
    """``report.html``: the table and an inline SVG chart (x: size, y: accuracy, radius: p50 latency)."""
    md_rows = []
    for row in report.get("variants", []):
        cells = _cells(row, report.get("selected"))
        cls = ' class="sel"' if row["name"] == report.get("selected") else ""
        md_rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(c[0])}</th>" for c in COLUMNS) + "<th>flags</th>"
    reasons = "".join(
        f"<li><code>{html.escape(r['name'])}</code>: {html.escape(str(r.get('rejected_because')))}</li>"
        for r in report.get("variants", [])
        if r["name"] != report.get("selected")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgeml convert: {html.escape(str(report.get("name")))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right;
          white-space: nowrap; }}
td:first-child, th:first-child {{ text-align: left; }} tr.sel {{ background: #e8f5e9; font-weight: bold; }}
</style></head><body>
<h1>Conversion report: {html.escape(str(report.get("name")))}</h1>
<p>Trained <code>{html.escape(str(report.get("trained", {}).get("recipe")))}</code>, test accuracy
{float(report.get("trained", {}).get("accuracy") or 0):.4f}. Measured in LiteRT / onnxruntime at batch 1, one thread, on
{html.escape(str(report.get("cpu")))}. Selected: <b>{html.escape(str(report.get("selected")))}</b>
({html.escape(str(report.get("selection", {}).get("rule")))}).</p>
{svg_chart(report)}
<table><thead><tr>{head}</tr></thead><tbody>{"".join(md_rows)}</tbody></table>
<h2>Why not the others</h2><ul>{reasons}</ul>
</body></html>
"""


def svg_chart(report: dict[str, Any], width: int = 760) -> str:
    """Inline SVG: one row per variant with three bars side by side — file size, p50 latency and
    accuracy drop — each scaled to its column's maximum; the selected variant is green."""
    rows = report.get("variants", [])
    if not rows:
        return "<p>no variants</p>"
    label_w, row_h, top = 150, 26, 34
    col_w = (width - label_w) // 3
    columns = (
        ("file size", "size_bytes", lambda v: human_size(int(v))),
        ("p50 latency (batch 1, 1 thread)", "latency_p50_ms", lambda v: f"{v:.4g} ms"),
        ("accuracy drop vs trained", "accuracy_drop", lambda v: f"{100 * v:+.2f} pp"),
    )
    height = top + row_h * len(rows) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        ' aria-label="size, latency and accuracy drop per variant" font-family="sans-serif">'
    ]
    for c, (title, _, _) in enumerate(columns):
        parts.append(f'<text x="{label_w + c * col_w}" y="16" font-size="12" font-weight="bold">{title}</text>')
    for c, (_, key, fmt) in enumerate(columns):
        peak = max((max(float(r[key]), 0.0) for r in rows), default=0.0) or 1.0
        for i, r in enumerate(rows):
            value = float(r[key])
            y = top + i * row_h
            color = (
                "#2e7d32"
                if r["name"] == report.get("selected")
                else ("#1565c0" if r["format"] == "tflite" else "#ef6c00")
            )
            bar = max(1.0, (col_w - 90) * max(value, 0.0) / peak)
            x = label_w + c * col_w
            parts.append(
                f'<rect x="{x}" y="{y}" width="{bar:.1f}" height="{row_h - 8}" fill="{color}" fill-opacity="0.75">'
                f"<title>{html.escape(r['name'])}: {fmt(value)}</title></rect>"
                f'<text x="{x + bar + 4:.1f}" y="{y + row_h - 13}" font-size="11">{fmt(value)}</text>'
            )
    for i, r in enumerate(rows):
        weight = ' font-weight="bold"' if r["name"] == report.get("selected") else ""
        parts.append(
            f'<text x="0" y="{top + i * row_h + row_h - 13}" font-size="12"{weight}>{html.escape(r["name"])}</text>'
        )
    parts.append("</svg>")
    parts.append('<p style="font-size:12px">blue: TFLite (LiteRT) · orange: ONNX (onnxruntime) · green: selected</p>')
    return "\n".join(parts)


def write_reports(folder: Path, report: dict[str, Any]) -> None:
    """Write ``report.md`` and ``report.html`` into ``folder``."""
    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.html").write_text(render_html(report))
