"""The page font of step1: the default (DejaVu Sans Mono, shipped with matplotlib, so pages are the same on every
machine), or one given by ``--font`` as a TrueType/OpenType file or an installed family name.

The authors render with ``arial.ttf`` at 20 pt. Arial itself is not free to ship, but Liberation Sans has Arial's
metrics (every glyph the same advance width), so the tiles a character covers match: on Debian/Ubuntu
``apt-get install fonts-liberation`` installs ``LiberationSans-Regular.ttf`` (``--font "Liberation Sans"`` or its
path). A family name is resolved by matplotlib's font manager (the fonts of its cache, the same lookup on every
platform), else by fontconfig's ``fc-match`` (fonts installed after matplotlib built its cache); either must match
the family itself: a name neither knows is refused, never replaced by a substitute (``Arial`` is not silently
Liberation Sans; ask for Liberation Sans by name).
"""

from __future__ import annotations

import hashlib
import subprocess
from functools import lru_cache
from pathlib import Path

import matplotlib
from PIL import ImageFont

from ocr_heads.core.errors import UserError

DEFAULT_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
# The first four bytes of a TrueType ("\0\1\0\0", Apple's "true"), CFF OpenType ("OTTO") or collection ("ttcf").
FONT_SIGNATURES = (b"\x00\x01\x00\x00", b"true", b"OTTO", b"ttcf")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc")


def is_font_file(path: Path) -> bool:
    """Whether ``path`` starts like a TrueType/OpenType font (the extension alone proves nothing)."""
    with path.open("rb") as handle:
        return handle.read(4) in FONT_SIGNATURES


def resolve_font(spec: str) -> Path:
    """``--font``'s value as a font file FreeType reads: a path as given (checked to be TrueType/OpenType), else an
    installed family name (matplotlib's font manager, then fontconfig). UserError when neither fits."""
    path = _font_file(spec)
    try:
        ImageFont.truetype(str(path), 20)
    except OSError as err:  # starts like a font, but FreeType cannot read it
        raise UserError(f"--font {spec}: FreeType cannot read {path.name} ({err})") from None
    return path


def _font_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_file():
        if not is_font_file(path):
            raise UserError(f"--font {spec}: not a TrueType/OpenType font file")
        return path.resolve()
    if path.is_dir() or "/" in spec or path.suffix.lower() in FONT_SUFFIXES:
        raise UserError(f"--font {spec}: no such font file")
    found = _matplotlib_family(spec) or _fontconfig_family(spec)
    if found is None:
        raise UserError(f"--font {spec!r}: no installed font of that family (a .ttf/.otf path also works; for "
                        "Arial's metrics install fonts-liberation and use 'Liberation Sans')")
    if not is_font_file(found):
        raise UserError(f"--font {spec!r}: resolves to {found}, which is not a TrueType/OpenType file")
    return found


def _matplotlib_family(name: str) -> Path | None:
    """The file matplotlib's font manager matches to ``name`` exactly (it knows the fonts of its cache)."""
    from matplotlib import font_manager

    try:
        return Path(font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False))
    except ValueError:
        return None


def _fontconfig_family(name: str) -> Path | None:
    """The file fontconfig's ``fc-match`` gives for ``name`` when its family is that name (fc-match always answers,
    with a substitute when it must: an alias such as Arial -> Liberation Sans is not taken silently)."""
    try:
        done = subprocess.run(["fc-match", "--format=%{file}\n%{family}\n", name], capture_output=True, text=True,
                              timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.splitlines()
    if len(lines) < 2:
        return None
    families = {family.strip().lower() for family in lines[1].split(",")}
    return Path(lines[0]) if name.strip().lower() in families and Path(lines[0]).is_file() else None


@lru_cache(maxsize=16)
def font_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def font_settings(path: Path) -> dict[str, str]:
    """What a step1 folder records of its font: the file's name and its sha256."""
    return {"font": path.name, "font_sha256": font_digest(path)}
