"""`archspec graph`: a picture of a network's cross-layer wiring as .svg or .png, or its DOT text,
written so that the same network always gives the same file."""

from __future__ import annotations

from pathlib import Path

from archspec.errors import RunError
from archspec.files import write_atomic
from archspec.graph.ir import Network

from .colours import COLOURS, OP_COLOURS
from .dot import to_dot
from .render import render
from .view import LEVELS, view

SUFFIXES = (".svg", ".png", ".dot")


def draw(net: Network, path: Path, level: str = "layer") -> Path:
    """Draw `net` at `level` (block, layer or op) to `path`: .svg or .png through matplotlib, .dot as
    text. Returns the path written."""
    path = Path(path)
    if level not in LEVELS:
        raise RunError(f"unknown drawing level '{level}'", f"levels: {', '.join(LEVELS)}")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RunError(f"cannot draw to '{path}': unknown file type '{path.suffix or '(none)'}'",
                       "give the output a .svg, .png or .dot name")
    v = view(net, level)
    if suffix == ".dot":
        write_atomic(path, to_dot(v))
    else:
        save_figure(render(v), path)
    return path


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Write a Figure by the path's suffix, atomically (`write_atomic`). A PNG is cut to 256 colours (the
    tints of translucent arcs by median cut, plus the legend's own colours, which are too rare to win a
    place), a third of the size; an SVG or PDF carries no date, so a redrawn picture is the same file."""
    suffix = Path(path).suffix.lower()
    write_atomic(path, lambda tmp: _write_figure(fig, tmp, suffix, dpi))


def _write_figure(fig, path: Path, suffix: str, dpi: int) -> None:
    if suffix != ".png":
        from matplotlib import rc_context

        with rc_context({"svg.hashsalt": "archspec"}):  # fixed ids for clip paths
            fig.savefig(path, format=suffix[1:], dpi=dpi, metadata={"Creator": None, "Date": None}
                        if suffix == ".svg" else {"Creator": None, "Producer": None, "CreationDate": None})
        return
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    with Image.open(buf) as img:
        rgb = img.convert("RGB")
    keys = [*COLOURS.values(), *OP_COLOURS.values(), "#ffffff", "#000000", "#333333"]
    palette = rgb.quantize(colors=256 - len(keys), method=Image.Quantize.MEDIANCUT).getpalette()
    palette = palette[:3 * (256 - len(keys))] + [int(k[i:i + 2], 16) for k in keys for i in (1, 3, 5)]
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette)
    out = rgb.quantize(palette=holder, dither=Image.Dither.NONE)
    exact = [tuple(int(k[i:i + 2], 16) for i in (1, 3, 5)) for k in keys]
    pal = out.getpalette()
    for j in range(len(pal) // 3):  # the lookup is coarse: give near-white back its white, and so on
        entry = pal[3 * j:3 * j + 3]
        near = min(exact, key=lambda c: sum((a - b) ** 2 for a, b in zip(c, entry)))
        if sum((a - b) ** 2 for a, b in zip(near, entry)) <= 48:
            pal[3 * j:3 * j + 3] = near
    out.putpalette(pal)
    out.save(path, format="PNG", optimize=True)
