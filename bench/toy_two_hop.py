"""How the toy model reads its passkey: which attention rows look at which digit's tile, and what breaks it.

    python bench/toy_two_hop.py [--n 8] [--seed 2024] [--json]

All attention here is eager, computed in this script from the model's own query/key/value (the
project's capture path is not used), over the prompt plus the greedy answer, with no KV cache.

1. Looking (observational): for every answer digit k, the tile(s) that show it on the page. For each
   (layer, head) we record the largest attention mass any *post-image prompt row* (a prompt position after
   the image, before the row that produces digit 1) puts on digit k's tile, and the mass the row that
   *produces* digit k puts on that tile and on the whole image.
2. Blocking (causal): greedy decoding again, with chosen rows of one layer forbidden to attend to image
   tokens; per-digit accuracy against the true key:
   - ``block post-image prompt rows in layer L``: the prefill can no longer copy tile contents into text
     positions at layer L;
   - ``block producing rows in layer L``: the rows that emit the digits can no longer look at the image.
   Run for every layer, so the layer each mechanism lives in is found, not assumed.
With ``--json`` the last stdout line is one JSON object with every number printed.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ocr_heads.attention import text_attention
from ocr_heads.models import ModelAdapter, ModelInputs, load_adapter
from ocr_heads.scores.geometry import covering_tiles
from ocr_heads.toy.data import QUESTION_VARIANTS, TOY_PROTOCOL, make_sample, sample_rng

IMPLEMENTATION = "ocr_heads_two_hop"
NEEDLE_PREFIX = "The pass key is "


@dataclass
class Block:
    """Rows of one layer that may not attend to the image tokens (absolute positions)."""

    layer: int = -1
    rows: tuple[int, ...] = ()
    image: tuple[int, ...] = ()


_BLOCK = Block()
_ATTENTIONS: list[torch.Tensor] = []  # per layer (heads, q, k) of the last forward, when recording


def eager_with_block(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Plain causal softmax attention (GQA by repeating kv heads), optionally blocking rows from the image."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    value = value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    q_len, k_len = scores.shape[-2:]
    rows = torch.arange(k_len - q_len, k_len)[:, None]
    allowed = torch.arange(k_len)[None, :] <= rows
    if module.layer_idx == _BLOCK.layer and _BLOCK.rows:
        blocked = torch.zeros(q_len, k_len, dtype=torch.bool)
        blocked[torch.tensor(_BLOCK.rows)[:, None] - (k_len - q_len), torch.tensor(_BLOCK.image)[None, :]] = True
        allowed &= ~blocked
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    _ATTENTIONS.append(probs[0].detach())
    return (probs @ value).transpose(1, 2).contiguous(), None


AttentionInterface.register(IMPLEMENTATION, eager_with_block)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


def forward(adapter: ModelAdapter, inputs: ModelInputs, extra: list[int]) -> torch.Tensor:
    """Logits of the last position after prompt + ``extra`` tokens (full forward, no cache)."""
    tail = torch.tensor([extra], dtype=inputs.input_ids.dtype)
    tensors = dict(inputs.tensors)
    tensors["input_ids"] = torch.cat([inputs.input_ids, tail], dim=1)
    tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    tensors["mm_token_type_ids"] = torch.cat([tensors["mm_token_type_ids"], torch.zeros_like(tail).int()], dim=1)
    _ATTENTIONS.clear()
    with torch.no_grad():
        return adapter.model(**tensors, use_cache=False).logits[0, -1]


def decode_digits(adapter: ModelAdapter, inputs: ModelInputs, count: int) -> list[int]:
    generated: list[int] = []
    for _ in range(count):
        generated.append(int(forward(adapter, inputs, generated).argmax()))
    return generated


@dataclass
class Case:
    inputs: ModelInputs
    answer: str
    digit_tiles: list[list[int]]  # per answer digit, its tile positions in the prompt
    image: list[int]
    post_image_rows: list[int]


def make_case(adapter: ModelAdapter, index: int, seed: int, question: str) -> Case:
    sample = make_sample(sample_rng(seed, "two_hop", index))
    inputs = adapter.image_inputs(sample.layout.render(), question)
    page = inputs.image_tokens[0]
    key_start = sample.needle_span[0] + len(NEEDLE_PREFIX)
    digit_tiles = []
    for k in range(len(sample.answer)):
        box = sample.layout.char_box(key_start + k).box
        digit_tiles.append([page.start + t for t in covering_tiles(box, page.tile_boxes)])
    image = list(page.positions)
    post_image_rows = list(range(image[-1] + 1, inputs.prompt_length - 1))
    return Case(inputs, sample.answer, digit_tiles, image, post_image_rows)


def digit_ids(adapter: ModelAdapter, answer: str) -> list[int]:
    return [adapter.tokenizer.convert_tokens_to_ids(c) for c in answer]


def looking(adapter: ModelAdapter, cases: list[Case]) -> dict:
    """Mean over cases of, per digit and head: max post-image-row mass on the digit's tile; producing-row mass."""
    shape = adapter.shape
    digits = len(cases[0].answer)
    parked = np.zeros((digits, shape.num_layers, shape.num_heads))
    # Which prompt token each head's parking row is: counts of the token text per (digit, layer, head).
    parking_rows: dict[tuple[int, int, int], Counter] = defaultdict(Counter)
    produce_tile = np.zeros_like(parked)
    produce_image = np.zeros_like(parked)
    for case in cases:
        answer_ids = digit_ids(adapter, case.answer)
        forward(adapter, case.inputs, answer_ids[:-1])  # teacher-forced: rows that produce each true digit
        prompt_length = case.inputs.prompt_length
        for layer, probs in enumerate(_ATTENTIONS):
            for k, tiles in enumerate(case.digit_tiles):
                on_tile = probs[:, :, tiles].sum(-1)  # (heads, rows)
                best = on_tile[:, case.post_image_rows].max(dim=1)
                parked[k, layer] += best.values.numpy()
                for head, row in enumerate(best.indices.tolist()):
                    token = case.inputs.input_ids[0, case.post_image_rows[row]].item()
                    parking_rows[k, layer, head][adapter.tokenizer.convert_ids_to_tokens(token)] += 1
                produce_tile[k, layer] += on_tile[:, prompt_length - 1 + k].numpy()
                produce_image[k, layer] += probs[:, prompt_length - 1 + k, case.image].sum(-1).numpy()
    n = len(cases)
    return {"parked": parked / n, "produce_tile": produce_tile / n, "produce_image": produce_image / n,
            "parking_rows": parking_rows}


def blocked_accuracy(adapter: ModelAdapter, cases: list[Case], layer: int, which: str) -> list[float]:
    """Per-digit accuracy of greedy decoding with ``which`` rows of ``layer`` blocked from the image."""
    global _BLOCK
    digits = len(cases[0].answer)
    correct = np.zeros(digits)
    for case in cases:
        prompt_length = case.inputs.prompt_length
        if which == "post_image":
            rows = case.post_image_rows
        elif which == "producing":
            rows = list(range(prompt_length - 1, prompt_length - 1 + digits))
        else:
            rows = []
        _BLOCK = Block(layer, tuple(rows), tuple(case.image))
        try:
            # Producing rows beyond the current length are dropped per step (they do not exist yet).
            generated: list[int] = []
            for _ in range(digits):
                length = prompt_length + len(generated)
                _BLOCK.rows = tuple(r for r in rows if r < length)
                generated.append(int(forward(adapter, case.inputs, generated).argmax()))
        finally:
            _BLOCK = Block()
        correct += np.array(generated) == np.array(digit_ids(adapter, case.answer))
    return (correct / len(cases)).round(3).tolist()


def top_heads(matrix: np.ndarray, count: int = 3) -> list[tuple[str, float]]:
    order = np.argsort(-matrix, axis=None)[:count]
    heads = [np.unravel_index(i, matrix.shape) for i in order]
    return [(f"l{layer}_h{head}", round(float(matrix[layer, head]), 3)) for layer, head in heads]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Eager attention, no KV cache.")
    parser.add_argument("--model", default="models/toy-qwen2-vl", help="toy model directory")
    parser.add_argument("--n", type=int, default=8, help="held-out samples per question variant (default 8)")
    parser.add_argument("--seed", type=int, default=2024, help="sample seed (default 2024)")
    parser.add_argument("--json", action="store_true", help="print every number as one JSON line, last")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_grad_enabled(False)
    adapter = load_adapter(args.model, protocol=TOY_PROTOCOL)  # the page budget the toy was trained on
    cases = [make_case(adapter, i, args.seed, q) for q in QUESTION_VARIANTS for i in range(args.n)]
    result: dict = {"n_cases": len(cases)}
    with text_attention(adapter, IMPLEMENTATION):
        base = blocked_accuracy(adapter, cases, -1, "none")
        looked = looking(adapter, cases)
        print(f"{len(cases)} cases ({args.n} samples x {len(QUESTION_VARIANTS)} question variants); "
              f"per-digit accuracy unmodified: {base}")
        print("\nlooking (mean over cases): top heads per answer digit")
        rows: dict[int, dict] = {}
        print(f"{'digit':>5} | {'post-image prompt rows: max mass on the digit tile':<52} | "
              f"{'producing row: mass on the digit tile':<44} | producing row: image mass per layer (max over heads)")
        for k in range(len(cases[0].answer)):
            parked, tile = top_heads(looked["parked"][k]), top_heads(looked["produce_tile"][k])
            layer, head = (int(v) for v in parked[0][0][1:].split("_h"))
            rows[k + 1] = {parked[0][0]: dict(looked["parking_rows"][k, layer, head].most_common(3))}
            image = " ".join(f"{v:.3f}" for v in looked["produce_image"][k].max(axis=1))
            print(f"{k + 1:>5} | {', '.join(f'{h} {v:.2f}' for h, v in parked):<52} | "
                  f"{', '.join(f'{h} {v:.2f}' for h, v in tile):<44} | {image}")
        print("parking rows of the top head per digit (prompt token: cases):", json.dumps(rows))
        result["accuracy_unmodified"] = base
        result["parking_rows"] = rows
        result["looking"] = {key: looked[key].round(4).tolist() for key in ("parked", "produce_tile", "produce_image")}
        print("\nblocking (per-digit accuracy)")
        result["blocking"] = {}
        for layer in range(adapter.shape.num_layers):
            for which in ("post_image", "producing"):
                accuracy = blocked_accuracy(adapter, cases, layer, which)
                result["blocking"][f"{which}_l{layer}"] = accuracy
                print(f"  block {which:>10} rows in layer {layer}: {accuracy}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
