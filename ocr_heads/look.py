"""Where the model looks: every output token's attention on the page, exact to the pixel.

    python -m ocr_heads.look --model_id Qwen/Qwen2-VL-2B-Instruct --image page_0.png \
        --question "What is the pass key?" --out look/

Generates the answer greedily once, recording for every producing row (the prefill's last row, then each decode
row), layer and head the probability on every image token (memory-flat: one row at a time, never S x S), and
writes in ``--out``: ``attention.safetensors`` (``image_attention``: steps x layers x heads x image tokens, in
prompt order), ``look.json`` (pieces, tile boxes, pages, settings, provenance), the page images, PNG overlays of
chosen tokens and the HTML viewer. With a step1 sample (``--data DIR --sample ID``) it also prints, per answer
character, the heads with the most mass on that character's tiles, next to the OCR score's argmax hits.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ocr_heads.core.commandline import Parser, positive_int, run_cli
from ocr_heads.core.provenance import model_fingerprint, model_note
from ocr_heads.data.images import open_rgb
from ocr_heads.data.samples import Sample, load_samples
from ocr_heads.maps import files, overlay
from ocr_heads.maps.answer import answer_heads, report_lines
from ocr_heads.maps.run import Look, look
from ocr_heads.maps.spec import HEADS_HELP, HeadSet, head_sets, parse_tokens
from ocr_heads.maps.viewer import write_viewer
from ocr_heads.models import ModelAdapter, load_adapter, require_pages
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.scores.rules import align_answer_tokens

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description="Where the model looks: generate the answer to a question about page images and write every "
        "output token's attention on every image token (exact page boxes), PNG overlays and an HTML viewer.",
        epilog="Writes in --out: attention.safetensors (image_attention: steps x layers x heads x image tokens), "
        "look.json, page_K.png, overlay_*.png, index.html. With --json the last stdout line is one JSON object: "
        '{"out": DIR, "files": [...], "answer": TEXT, "answer_heads": [...]}.',
    )
    add_model_args(parser)
    parser.add_argument("--image", nargs="+", type=Path, default=None, help="page image(s), in order")
    parser.add_argument("--question", default=None, help="the question (default with --sample: the sample's)")
    parser.add_argument("--data", type=Path, default=None, help="a step1 folder (samples.jsonl), with --sample")
    parser.add_argument("--sample", default=None, help="the id of a step1 sample in --data: its pages and question, "
                        "and its evidence boxes for the heads that look at the answer")
    parser.add_argument("--out", required=True, type=Path, help="output folder (a previous look folder is replaced)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="tokens to generate (default 32)")
    parser.add_argument("--heads", default=None, help=HEADS_HELP)
    parser.add_argument("--layers", default=None, help="also map the mean over the heads of layers A-B")
    parser.add_argument("--per_head", action="store_true", help="one overlay per head of --heads, not their mean")
    parser.add_argument("--tokens", default=None, help="overlay these generated tokens (steps, e.g. 0,1,2; "
                        "default: every answer token)")
    parser.add_argument("--float32", action="store_true", help="store the maps as float32 (default float16)")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON line (see below)")
    return parser


def read_image(path: Path) -> Image.Image:
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    return open_rgb(path, f"cannot read image {path}")


def pages_and_question(args: argparse.Namespace) -> tuple[list[Image.Image], list[str], str, Sample | None]:
    """(pages, their file names, question, the step1 sample or None)."""
    if (args.image is None) == (args.sample is None):
        raise ValueError("give either --image PAGE [PAGE ...] with --question, or --data DIR --sample ID")
    if args.sample is not None:
        if args.data is None:
            raise ValueError("--sample needs --data DIR (a step1 folder)")
        found = [s for s in load_samples(args.data) if s.id == args.sample]
        if not found:
            raise ValueError(f"no sample {args.sample!r} in {args.data}")
        sample = found[0]
        return sample.load_pages(), [p.name for p in sample.page_paths], args.question or sample.question, sample
    if not args.question:
        raise ValueError("--image needs --question")
    return [read_image(path) for path in args.image], [path.name for path in args.image], args.question, None


def chosen_steps(args: argparse.Namespace, seen: Look, sample: Sample | None) -> list[int]:
    if args.tokens:
        return parse_tokens(args.tokens, len(seen.pieces))
    if sample is not None:
        steps = [token.index for token in align_answer_tokens(seen.pieces, sample.answer)]
        if steps:
            return steps
    shown = [step for step, piece in enumerate(seen.pieces) if piece.strip()]
    return shown or list(range(len(seen.pieces)))  # an answer of blanks still gets its maps drawn


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def draw_overlays(folder: Path, seen: Look, pages: list[Image.Image], sets: list[HeadSet],
                  steps: list[int]) -> list[dict]:
    attention = seen.attention.float().numpy()
    drawn = []
    for step in steps:
        for head_set in sets:
            values = head_set.mean_map(attention, step)
            name = f"overlay_s{step:02d}_{slug(head_set.label)}.png"
            title = f"step {step}: token {seen.pieces[step]!r} ({head_set.label})"
            overlay.draw(folder / name, pages, seen.tokens.tiles, seen.tokens.pages, values, title)
            drawn.append({"file": name, "step": step, "piece": seen.pieces[step], "heads": head_set.label,
                          "head_list": [f"l{layer}_h{head}" for layer, head in head_set.heads]})
    return drawn


def look_meta(args: argparse.Namespace, adapter: ModelAdapter, seen: Look, page_files: list[str],
              pages: list[Image.Image], sample: Sample | None, chars: list, overlays: list[dict]) -> dict:
    tiles = [None if np.isnan(box).any() else [round(float(v), 4) for v in box] for box in seen.tokens.tiles]
    shape = adapter.shape
    return {
        "model": adapter.name, "model_id": str(args.model_id), "protocol": adapter.protocol,
        "question": seen.question, "answer": seen.answer, "pieces": seen.pieces, "generated_ids": seen.generated,
        "tiles": tiles, "pages": seen.tokens.pages, "image_positions": seen.tokens.positions,
        "page_files": page_files, "page_sizes": [list(page.size) for page in pages],
        "source_files": [str(path) for path in args.image] if args.image else None,
        "layers": shape.num_layers, "heads": shape.num_heads, "attention_layers": adapter.scoreable_layers,
        "dtype": str(seen.attention.dtype).removeprefix("torch."),
        "groups": seen.groups, "group_mass": {name: files.GROUP_PREFIX + name for name in seen.group_mass},
        "groups_note": "prompt positions; image_K, question, sink and text partition the prompt (evidence: the "
                       "answer's tiles); a decode row also attends to the answer so far, 1 - their sum",
        "steps": "step 0 is the prefill's last row (it produces the first token), step s the row that produces "
                 "generated token s",
        "settings": {**adapter.settings(), "max_new_tokens": args.max_new_tokens, "heads_spec": args.heads,
                     "layers_spec": args.layers, "decoding": "greedy"},
        "sample": {"data": str(args.data), "id": sample.id, "answer": sample.answer} if sample else None,
        "model_fingerprint": model_fingerprint(str(args.model_id)),
        "model_note": model_note(adapter.config, str(args.model_id)),
        "answer_heads": [char.as_json() for char in chars],
        "overlays": overlays,
    }


def run(args: argparse.Namespace) -> int:
    files.check_out(args.out)
    pages, names, question, sample = pages_and_question(args)
    require_pages(args.model_id, "python -m ocr_heads.look")
    adapter = load_adapter(args.model_id, **adapter_kwargs(args))
    shape = adapter.shape
    sets = head_sets(args.heads, args.layers, args.per_head, shape.num_layers, shape.num_heads)
    dtype = torch.float32 if args.float32 else torch.float16
    seen = look(adapter, pages, question, args.max_new_tokens, dtype, sample)
    chars = answer_heads(seen, sample.answer) if sample is not None else []
    steps = chosen_steps(args, seen, sample)
    with files.staged(args.out) as folder:
        page_files = [f"page_{k}.png" for k in range(len(pages))]
        for page, name in zip(pages, page_files, strict=True):
            page.save(folder / name)
        files.write_maps(folder, seen.attention, seen.group_mass)
        overlays = draw_overlays(folder, seen, pages, sets, steps)
        files.write_meta(folder, look_meta(args, adapter, seen, page_files, pages, sample, chars, overlays))
        write_viewer(folder)  # index.html: the self-contained viewer of these maps
    written = sorted(path.name for path in args.out.iterdir())
    print(f"model: {adapter.name} (protocol {adapter.protocol})")
    if note := model_note(adapter.config, str(args.model_id)):
        print(f"note: {note}")
    print(f"question: {question}\nanswer: {seen.answer!r} ({len(seen.pieces)} tokens)")
    print(f"maps: {tuple(seen.attention.shape)} (steps, layers, heads, image tokens) in "
          f"{args.out / files.ATTENTION_FILE}")
    print(f"wrote {len(written)} files in {args.out}: {', '.join(written)}")
    if chars:
        print("\n".join(report_lines(chars)))
    if args.json:
        print(json.dumps({"out": str(args.out), "files": written, "answer": seen.answer,
                          "answer_heads": [char.as_json() for char in chars]}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run_cli(run, args)


if __name__ == "__main__":
    sys.exit(main())
