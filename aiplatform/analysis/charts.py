"""Charts as files the UI shows and a report links to: SVG bar charts and a grayscale PNG of
a mean image. Written here with no plotting library, so a job needs nothing beyond numpy."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from html import escape

import numpy as np

WIDTH, HEIGHT, MARGIN = 480, 220, 32


def bar_chart_svg(
    title: str,
    values: Sequence[float],
    labels: Sequence[str],
    compare: Sequence[float] | None = None,
    legend: tuple[str, str] = ("reference", "live"),
) -> str:
    """Bars (and, with ``compare``, a second series beside them) with a title and axis labels."""
    series = [list(map(float, values))] + ([list(map(float, compare))] if compare is not None else [])
    top = max([v for s in series for v in s] + [1e-12])
    slot = (WIDTH - 2 * MARGIN) / max(1, len(values))
    bar = slot * 0.8 / len(series)
    colors = ("#4b7bec", "#eb6f3a")
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{MARGIN}" y="16" font-size="12" font-family="sans-serif">{escape(title)}</text>',
        f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN}" stroke="#888"/>',
    ]
    for s_index, values_ in enumerate(series):
        for i, value in enumerate(values_):
            h = (HEIGHT - 2 * MARGIN - 8) * value / top
            x = MARGIN + i * slot + slot * 0.1 + s_index * bar
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{HEIGHT - MARGIN - h:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{colors[s_index]}"><title>{escape(str(labels[i]))}: {value:.4g}'
                f"</title></rect>"
            )
    step = max(1, len(labels) // 10)
    for i in range(0, len(labels), step):
        x = MARGIN + i * slot + slot / 2
        parts.append(
            f'<text x="{x:.1f}" y="{HEIGHT - MARGIN + 14}" font-size="10" text-anchor="middle" '
            f'font-family="sans-serif">{escape(str(labels[i])[:10])}</text>'
        )
    if compare is not None:
        for s_index, name in enumerate(legend):
            x = WIDTH - MARGIN - 150 + s_index * 75
            parts.append(
                f'<rect x="{x}" y="6" width="10" height="10" fill="{colors[s_index]}"/>'
                f'<text x="{x + 14}" y="15" font-size="10" font-family="sans-serif">{escape(name)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def grayscale_png(image: np.ndarray, scale: int = 4) -> bytes:
    """A float image in [0, 1] (H, W) or (H, W, C; channels averaged) as a PNG, enlarged ``scale`` times."""
    array = np.asarray(image, dtype=np.float64)
    if array.ndim == 3:
        array = array.mean(axis=2)
    pixels = np.clip(array * 255.0, 0, 255).astype(np.uint8)
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
