"""The self-contained HTML viewer of a ``look`` folder: ``python -m ocr_heads.maps.viewer DIR``.

Reads ``DIR/look.json``, ``DIR/attention.safetensors`` (``image_attention``: steps x layers x heads x image
tokens) and the page images, and writes ``DIR/index.html``: one file that works from ``file://`` with no
server and no network. Pages are embedded as data URIs; the attention as one base64 blob of uint8 values,
each (step, layer, head) map quantised against its own maximum (its float32 scale travels alongside), so a
map keeps 1/255 of its peak as resolution. Size: steps x layers x heads x tokens bytes, x 4/3 for base64
(28 layers x 12 heads x 30 steps x 1000 tokens: 10.1 MB raw, about 13.5 MB of HTML, plus the pages).
The page script (``viewer.html`` next to this module) decodes the blob and paints the maps in the browser.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from ocr_heads.core.commandline import Parser, run_cli
from ocr_heads.core.io import read_json, write_text_atomic

TENSOR = "image_attention"
PLACEHOLDER = "__LOOK_DATA__"
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
LOOK_KEYS = ("model", "protocol", "question", "answer", "pieces", "tiles", "pages", "page_sizes", "layers", "heads",
             "answer_heads", "scores")


def quantise(attention: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 codes (same shape) and one float32 scale per map (the last axis): value = code * scale / 255."""
    values = np.nan_to_num(attention.astype(np.float32), nan=0.0)
    scales = np.clip(values, 0.0, None).max(axis=-1)
    safe = np.where(scales > 0, scales, 1.0)[..., None]
    codes = np.rint(np.clip(values, 0.0, None) / safe * 255.0).astype(np.uint8)
    return codes, scales.astype("<f4")


def load_attention(out_dir: Path, look: dict) -> np.ndarray:
    path = out_dir / "attention.safetensors"
    tensors = load_file(str(path))
    if TENSOR not in tensors:
        raise ValueError(f"{path}: no tensor {TENSOR!r} (found {sorted(tensors)})")
    attention = tensors[TENSOR]
    expected = (len(look["pieces"]), int(look["layers"]), int(look["heads"]), len(look["tiles"]))
    if attention.shape != expected:
        raise ValueError(f"{path}: {TENSOR} has shape {tuple(attention.shape)}; look.json says "
                         f"(steps, layers, heads, image tokens) = {expected}")
    if len(look["pages"]) != len(look["tiles"]):
        raise ValueError(f"{out_dir / 'look.json'}: {len(look['pages'])} page indices for {len(look['tiles'])} tiles")
    return attention


def page_uri(path: Path) -> str:
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: not a page image the viewer embeds ({', '.join(IMAGE_TYPES)})")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def viewer_data(out_dir: Path) -> dict:
    """Everything the page script needs, JSON-ready."""
    look = read_json(out_dir / "look.json")
    attention = load_attention(out_dir, look)
    codes, scales = quantise(attention)
    data = {key: look.get(key) for key in LOOK_KEYS}
    data["steps"] = len(look["pieces"])
    data["tokens"] = len(look["tiles"])
    data["page_images"] = [page_uri(out_dir / name) for name in look["page_files"]]
    data["codes"] = base64.b64encode(codes.tobytes()).decode("ascii")
    data["scales"] = base64.b64encode(scales.tobytes()).decode("ascii")
    return data


def viewer_html(data: dict) -> str:
    template = resources.files("ocr_heads.maps").joinpath("viewer.html").read_text(encoding="utf-8")
    # Inside <script> the text "</script>" would end the block: "<" is written as its JSON escape.
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return template.replace(PLACEHOLDER, payload, 1)


def write_viewer(out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` from the look folder's files; its path."""
    out_dir = Path(out_dir)
    path = out_dir / "index.html"
    write_text_atomic(path, viewer_html(viewer_data(out_dir)))
    return path


def build_parser() -> Parser:
    parser = Parser(prog="python -m ocr_heads.maps.viewer",
                    description="Rewrite DIR/index.html, the self-contained viewer of a look folder "
                                "(look.json, attention.safetensors and the page images).")
    parser.add_argument("dir", type=Path, metavar="DIR", help="a folder written by python -m ocr_heads.look")
    return parser


def _run(args) -> int:
    print(write_viewer(args.dir))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
