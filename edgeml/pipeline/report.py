"""Rendering a convert report: a plain-text variant table, ``report.md`` and ``report.html``
(an inline SVG chart of size vs accuracy vs latency; no external assets)."""

from __future__ import annotations

import html
import math
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
table {{ border-collapse: collapse; }} td, th {{ padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} tr.sel {{ background: #e8f5e9; font-weight: bold; }}
</style></head><body>
<h1>Conversion report: {html.escape(str(report.get("name")))}</h1>
<p>Trained <code>{html.escape(str(report.get("trained", {}).get("recipe")))}</code>, accuracy
{report.get("trained", {}).get("accuracy")}. Measured in LiteRT / onnxruntime at batch 1, one thread, on
{html.escape(str(report.get("cpu")))}. Selected: <b>{html.escape(str(report.get("selected")))}</b>
({html.escape(str(report.get("selection", {}).get("rule")))}).</p>
{svg_chart(report)}
<table><thead><tr>{head}</tr></thead><tbody>{"".join(md_rows)}</tbody></table>
<h2>Why not the others</h2><ul>{reasons}</ul>
</body></html>
"""


def svg_chart(report: dict[str, Any], width: int = 640, height: int = 360) -> str:
    """Inline SVG scatter: x = file size (log scale), y = accuracy, circle area ~ p50 latency."""
    rows = report.get("variants", [])
    if not rows:
        return "<p>no variants</p>"
    pad_l, pad_r, pad_t, pad_b = 70, 150, 20, 50
    sizes = [math.log10(max(r["size_bytes"], 1)) for r in rows]
    accs = [float(r["accuracy"]) for r in rows]
    lats = [float(r["latency_p50_ms"]) for r in rows]
    x0, x1 = min(sizes) - 0.05, max(sizes) + 0.05
    y0, y1 = min(accs) - 0.005, max(accs) + 0.005
    lmax = max(lats) or 1.0

    def sx(v: float) -> float:
        return pad_l + (v - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(v: float) -> float:
        return height - pad_b - (v - y0) / (y1 - y0) * (height - pad_t - pad_b)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        ' aria-label="size vs accuracy vs latency">',
        f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" y2="{height - pad_b}" stroke="#444"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#444"/>',
        f'<text x="{(width - pad_r + pad_l) / 2}" y="{height - 10}" text-anchor="middle" font-size="12">'
        "file size (log scale)</text>",
        f'<text x="15" y="{(height - pad_b + pad_t) / 2}" font-size="12" transform="rotate(-90 15'
        f' {(height - pad_b + pad_t) / 2})" text-anchor="middle">test accuracy</text>',
        f'<text x="{pad_l - 5}" y="{sy(y1) + 4:.1f}" text-anchor="end" font-size="10">{y1:.3f}</text>',
        f'<text x="{pad_l - 5}" y="{sy(y0) + 4:.1f}" text-anchor="end" font-size="10">{y0:.3f}</text>',
    ]
    for r, s, a, lat in zip(rows, sizes, accs, lats):
        rad = 4 + 14 * math.sqrt(lat / lmax)
        color = (
            "#2e7d32" if r["name"] == report.get("selected") else ("#1565c0" if r["format"] == "tflite" else "#ef6c00")
        )
        parts.append(
            f'<circle cx="{sx(s):.1f}" cy="{sy(a):.1f}" r="{rad:.1f}" fill="{color}" fill-opacity="0.45"'
            f' stroke="{color}"><title>{html.escape(r["name"])}: {r["size_bytes"]} B, acc {a:.4f},'
            f" p50 {lat:.3f} ms</title></circle>"
        )
        parts.append(
            f'<text x="{sx(s) + rad + 2:.1f}" y="{sy(a) + 4:.1f}" font-size="10">{html.escape(r["name"])}'
            f" ({lat:.2f} ms)</text>"
        )
    parts.append(
        f'<text x="{width - pad_r + 10}" y="{pad_t + 10}" font-size="10">circle area ~ p50 latency</text>'
        f'<text x="{width - pad_r + 10}" y="{pad_t + 25}" font-size="10" fill="#1565c0">tflite</text>'
        f'<text x="{width - pad_r + 10}" y="{pad_t + 40}" font-size="10" fill="#ef6c00">onnx</text>'
        f'<text x="{width - pad_r + 10}" y="{pad_t + 55}" font-size="10" fill="#2e7d32">selected</text>'
    )
    parts.append("</svg>")
    return "\n".join(parts)


def write_reports(folder: Path, report: dict[str, Any]) -> None:
    """Write ``report.md`` and ``report.html`` into ``folder``."""
    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.html").write_text(render_html(report))
