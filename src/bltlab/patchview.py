"""Showing a segmentation: statistics, bracketed patches, and an HTML view with the
per-byte entropy curve under coloured patches (as in the BLT paper's figure)."""

from __future__ import annotations

import html
import json
import sys
import unicodedata

import numpy as np

from bltlab.patching import Segmentation

HISTOGRAM_ROWS = 16  # patch lengths shown one per line; longer ones share a line
COLOURS = ("#fde68a", "#bfdbfe", "#bbf7d0", "#fbcfe8", "#ddd6fe", "#fed7aa")


def patch_lengths(seg: Segmentation) -> np.ndarray:
    """Length in bytes of every patch of every row, in order."""
    starts = np.flatnonzero(seg.starts)
    return np.diff(np.append(starts, len(seg.starts)))


def stats(seg: Segmentation) -> dict:
    """Rows, bytes, patches, mean / median / max bytes per patch and a length histogram."""
    lengths = patch_lengths(seg)
    hist = np.bincount(lengths, minlength=1)
    return {
        "rows": len(seg.batch),
        "bytes": int(len(seg.batch.data)),
        "patches": int(len(lengths)),
        "bytes_per_patch": round(seg.bytes_per_patch(), 4),
        "median_patch_bytes": float(np.median(lengths)) if len(lengths) else 0.0,
        "max_patch_bytes": int(lengths.max()) if len(lengths) else 0,
        "patches_per_row": round(len(lengths) / max(1, len(seg.batch)), 3),
        "histogram": {str(k): int(v) for k, v in enumerate(hist) if v},
    }


def format_stats(name: str, s: dict) -> str:
    lines = [f"{name}",
             f"  rows {s['rows']}  bytes {s['bytes']}  patches {s['patches']}",
             f"  bytes/patch mean {s['bytes_per_patch']:.3f}  median "
             f"{s['median_patch_bytes']:g}  max {s['max_patch_bytes']}"]
    shown: dict[str, int] = {}
    for length, count in s["histogram"].items():
        key = length if int(length) <= HISTOGRAM_ROWS else f">{HISTOGRAM_ROWS}"
        shown[key] = shown.get(key, 0) + count
    peak = max(shown.values())
    for length, count in shown.items():
        bar = "#" * max(1, round(40 * count / peak))
        lines.append(f"  {length:>3} B {count:>8}  {bar}")
    return "\n".join(lines)


KEEP_FORMAT = {"\u200c", "\u200d"}  # zero-width (non-)joiners: parts of emoji and scripts


def printable(text: str) -> str:
    """`text` with control and invisible format characters (ESC, bidi overrides...)
    escaped, so printing it cannot drive the terminal."""
    return "".join(c.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(c) in ("Cc", "Cf") and c not in KEEP_FORMAT else c
                   for c in text)


def bracketed(seg: Segmentation, row: int) -> str:
    """`[patch][patch]...` for one row (control characters escaped)."""
    return "".join(f"[{printable(p.decode('utf-8', errors='replace'))}]"
                   for p in seg.row_patches(row))


def _entropy_svg(values: np.ndarray, threshold: float | None, width_per_byte: float = 9.0,
                 height: float = 60.0) -> str:
    if len(values) == 0:
        return ""
    top = max(float(values.max()), threshold or 0.0, 1e-9)
    y = lambda v: height - 4 - (height - 8) * v / top  # noqa: E731
    points = " ".join(f"{(i + 0.5) * width_per_byte:.1f},{y(v):.1f}" for i, v in enumerate(values))
    width = len(values) * width_per_byte
    rule = (f'<line x1="0" x2="{width:.1f}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
            f'stroke="#dc2626" stroke-dasharray="4 3"/>' if threshold is not None else "")
    return (f'<svg width="{width:.0f}" height="{height:.0f}" role="img" '
            f'aria-label="per-byte entropy">{rule}<polyline fill="none" stroke="#1d4ed8" '
            f'stroke-width="1.5" points="{points}"/></svg>')


def row_html(seg: Segmentation, row: int, entropy: np.ndarray | None,
             threshold: float | None) -> str:
    """One row: coloured patch spans, one monospace cell per byte, and the entropy curve."""
    cells = []
    for i, patch in enumerate(seg.row_patches(row)):
        text = patch.decode("utf-8", errors="replace")
        # one cell per byte keeps the spans aligned with the per-byte curve
        pad = "\u00a0" * (len(patch) - len(text))
        cells.append(f'<span class="p" style="background:{COLOURS[i % len(COLOURS)]};'
                     f'width:{9 * len(patch)}px">{html.escape(text)}{pad}</span>')
    lo, hi = seg.batch.offsets[row], seg.batch.offsets[row + 1]
    curve = _entropy_svg(entropy[lo:hi], threshold) if entropy is not None else ""
    return f'<div class="row"><div class="text">{"".join(cells)}</div>{curve}</div>'


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """A self-contained HTML page: (heading, body html) sections; headings are escaped."""
    body = "\n".join(f"<h2>{html.escape(h)}</h2>\n{b}" for h, b in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
.row {{ margin: 0 0 1.2em 0; }}
.text {{ font-family: monospace; font-size: 15px; white-space: pre; display: flex; }}
.p {{ display: inline-block; border-right: 1px solid #555; overflow: hidden; }}
svg {{ display: block; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 8px; border: 1px solid #ccc; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{body}
</body></html>
"""


def show_patches(text: str | None, file: str | None, train_csv: str, patchers: list[str],
                 settings: dict, as_json: bool, html_path: str | None, html_rows: int,
                 skip_bad_rows: bool) -> None:
    """`bltlab patch`: each patcher's cut of a string or a CSV's inputs, as brackets,
    statistics, JSON and/or an HTML view with the entropy curve."""
    from bltlab.data import load_pairs
    from bltlab.fileio import check_output_file, write_atomic
    from bltlab.patching import PatcherConfig, build_patcher
    from bltlab.spec import flag_names

    if html_path:
        check_output_file(html_path, "--html", inputs=(file, train_csv))
    texts = [text] if text is not None else load_pairs(file, skip_bad_rows=skip_bad_rows).inputs
    names = flag_names(PatcherConfig)
    results, sections = {}, []
    for name in patchers:
        cfg = PatcherConfig(patcher=name, **{names[k]: v for k, v in settings.items()})
        patcher = build_patcher(cfg, load_pairs(train_csv).inputs if cfg.needs_text else None)
        seg = patcher.segment(texts)
        label = patcher.cfg.describe()
        results[label] = {**stats(seg), "config": patcher.cfg.to_dict()}
        if text is not None and not as_json:
            print(f"{label}\n  {bracketed(seg, 0)}  ({len(seg.row_patches(0))} patches, "
                  f"{seg.bytes_per_patch():.2f} B/patch)")
        elif not as_json:
            print(format_stats(label, results[label]))
        if html_path:
            entropy, level = patcher.entropy(seg.batch), patcher.threshold_level()
            sections.append((label, "".join(row_html(seg, r, entropy, level)
                                            for r in range(min(len(texts), html_rows)))))
    if as_json:
        print(json.dumps(next(iter(results.values())) if len(results) == 1 else results,
                         indent=2, ensure_ascii=False))
    if html_path:
        write_atomic(html_path, lambda f: f.write(page("bltlab patches", sections)))
        print(f"wrote {html_path}", file=sys.stderr if as_json else sys.stdout)
