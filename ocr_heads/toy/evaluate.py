"""Held-out exact match of the toy model on the image and the text passkey task.

    python -m ocr_heads.toy.evaluate --model models/toy-qwen2-vl --n 100 --seed 7 --json
    python -m ocr_heads.toy.evaluate --model models/toy-qwen2-vl --n 100 --seed 7 --json --mask-heads l4_h2,l4_h3

Generates N fresh samples from seed S (a stream training never draws from), asks the model through
the project's adapter (the same prompts step2 builds), decodes greedily and scores exact match.
With ``--json`` the last printed line is ``{"image_em": .., "text_em": .., ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
from contextlib import nullcontext

from tqdm import tqdm

from ocr_heads.attention.edits import mask_heads
from ocr_heads.core.commandline import Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.models import ModelAdapter, load_adapter
from ocr_heads.toy.data import QUESTION, TOY_PROTOCOL, make_sample, sample_rng

logger = logging.getLogger(__name__)

EVAL_SPLIT = "heldout"
# Five digits and the end-of-turn, with room to spare so a wrong, longer answer is seen whole.
MAX_NEW_TOKENS = 8


def evaluate(adapter: ModelAdapter, n: int, seed: int, heads: list[str] | None = None,
             question: str = QUESTION, tasks: tuple[str, ...] = ("image", "text")) -> dict:
    """Exact match on ``n`` fresh samples of each task in ``tasks``, optionally with ``heads`` masked."""
    if n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    correct = dict.fromkeys(tasks, 0)
    with mask_heads(adapter, heads) if heads else nullcontext():
        for i in tqdm(range(n), desc="toy evaluate", unit="sample"):
            sample = make_sample(sample_rng(seed, EVAL_SPLIT, i))
            for task, inputs in (("image", lambda s=sample: adapter.image_inputs(s.layout.render(), question)),
                                 ("text", lambda s=sample: adapter.text_inputs(s.context, question))):
                if task in correct:
                    prediction = adapter.decode(adapter.generate(inputs(), MAX_NEW_TOKENS)).strip()
                    correct[task] += prediction == sample.answer
    return {**{f"{task}_em": hits / n for task, hits in correct.items()}, "n": n, "seed": seed,
            "masked_heads": list(heads or [])}


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Held-out exact match of a toy Qwen2-VL on image and text passkeys (fresh samples from "
        "--seed; reads only the model directory).",
    )
    parser.add_argument("--model_id", required=True, help="model directory (e.g. models/toy-qwen2-vl)")
    parser.add_argument("--n", type=positive_int, default=100, help=count_help("per task (image and text)", 100))
    parser.add_argument("--seed", type=int, default=12345, help="sample seed (default 12345)")
    parser.add_argument("--mask-heads", default="", help="comma-separated heads to mask, e.g. l3_h1,l2_h0")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line (last line)")
    args = parser.parse_args(argv)
    setup_logging()
    return run_cli(_run, args)


def _run(args: argparse.Namespace) -> int:
    heads = [h.strip() for h in args.mask_heads.split(",") if h.strip()]
    adapter = load_adapter(args.model_id, protocol=TOY_PROTOCOL)
    result = evaluate(adapter, args.n, args.seed, heads)
    if args.json:
        print(json.dumps(result))
    else:
        masked = f" with {', '.join(heads)} masked" if heads else ""
        print(f"image EM {result['image_em']:.3f}, text EM {result['text_em']:.3f} on {args.n} held-out samples "
              f"(seed {args.seed}){masked}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
