"""The toy model's loss curve (PNG) and model card (MODEL_CARD.md), from its training log."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path

import numpy as np
import torch
import transformers

logger = logging.getLogger(__name__)

CARD_FILE = "MODEL_CARD.md"


def _smooth(values: list[float], window: int = 25) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values
    return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_training(history: dict, path: str | Path) -> Path:
    """Losses per step (moving average of 25) and validation exact match, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    steps = history["steps"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("text_loss", "text answer loss"), ("image_loss", "image answer loss"),
                       ("aux_loss", "auxiliary tile loss")):
        points = [(s["step"], s[key]) for s in steps if key in s]
        if points:
            x, y = zip(*points, strict=True)
            smooth = _smooth(list(y))
            left.plot(np.asarray(x[len(x) - len(smooth):]), smooth, label=label)
    text_steps = history["config"]["text_steps"]
    for axis in (left, right):
        axis.axvline(text_steps, color="grey", linestyle=":", linewidth=1)
        axis.set_xlabel("step")
    left.set_yscale("log")
    left.set_ylabel("cross-entropy (moving average of 25 steps)")
    left.set_title("Training losses (dotted: text warm-up ends)")
    left.legend()
    evals = history["evals"]
    right.plot([e["step"] for e in evals], [e["image_em"] for e in evals], marker="o", label="image EM")
    right.plot([e["step"] for e in evals], [e["text_em"] for e in evals], marker="o", label="text EM")
    right.set_ylim(-0.02, 1.02)
    right.set_ylabel("exact match (validation, teacher-forced = greedy)")
    right.set_title("Validation exact match")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    logger.info("loss curve -> %s", path)
    return path


def write_model_card(model_dir: str | Path, history: dict, heldout: dict, heldout_seed: int, command: str,
                     threads: int, note: str = "") -> Path:
    model_dir = Path(model_dir)
    cfg = history["config"]
    size = json.loads((model_dir / "preprocessor_config.json").read_text())["size"]
    params = sum(p.numel() for p in _load_state(model_dir).values())
    minutes = history["elapsed_s"] / 60
    samples = cfg["batch"] * (cfg["text_steps"] + 2 * cfg["joint_steps"])
    last = history["evals"][-1] if history["evals"] else {}
    recorded = json.dumps({"image_em": heldout["image_em"], "text_em": heldout["text_em"], "n": heldout["n"],
                           "seed": heldout_seed})
    text = f"""# toy-qwen2-vl

A {params / 1e6:.2f}M-parameter `Qwen2VLForConditionalGeneration` (the real Qwen2-VL architecture and
class) trained on CPU by `ocr_heads.toy.train` to read 5-digit passkeys from page images and to copy
them from plain text. It exists so the pipeline has a model whose OCR heads are real: see
`docs/toy_model.md` for the recipe, the loss curve and what the pipeline finds in it.

- Text model: {cfg['layers']} layers, hidden {cfg['hidden']}, {cfg['heads']} heads / {cfg['kv_heads']} kv heads;
  vision tower: depth {cfg['vision_depth']}, embed {cfg['vision_embed']} (patch 14, spatial merge 2).
- Tokenizer: the project's character tokenizer (`ocr_heads.models.tiny.charset`, one token per character).
- Pages: 16 x 6 cells of 28x28 px, one character per cell (one LLM image token), DejaVu Sans Mono;
  `python -m ocr_heads.toy.data` writes them as step1 records.
- Image processor: min_pixels {size['shortest_edge']}, max_pixels {size['longest_edge']} (a page of
  at most 256 cells is not resized, so every cell stays one tile).
- Protocol: `native`, declared in config.json (`ocr_heads_protocol`): commands load it at its own bounds
  unless `--protocol` says otherwise (the paper's budget would upscale its pages to a geometry it never saw).

## Training

- Command: `{command}`
- Seed: {cfg['seed']} (weights, and every batch: sample i of step s comes from its own seeded stream).
- Data: generated on the fly, {samples:,} samples in all ({cfg['text_steps']} text-only steps, then
  {cfg['joint_steps']} steps of one image batch and one text batch, batch {cfg['batch']}).
- Optimiser: AdamW, lr {cfg['lr']} (warm-up {cfg['warmup']} steps per phase, cosine to
  {cfg['min_lr_ratio']} x lr in the joint phase), weight decay {cfg['weight_decay']}, clip 1.0,
  auxiliary tile loss weight {cfg['aux_weight']}.
- Time: {minutes:.1f} min wall on {platform.machine()} CPU ({threads} torch thread(s), a 2-core machine shared
  with other jobs), torch {torch.__version__.split('+')[0]}, transformers {transformers.__version__}.{note}
- Final validation (teacher-forced, {cfg['eval_n']} samples): image EM {last.get('image_em', float('nan')):.3f},
  text EM {last.get('text_em', float('nan')):.3f}.

## Held-out accuracy

`python -m ocr_heads.toy.evaluate --model_id models/toy-qwen2-vl --n {heldout['n']} --seed {heldout_seed} --json`
(fresh samples, greedy decoding through the project's adapter, exact match):

| task | exact match |
|---|---|
| image passkey | {heldout['image_em']:.3f} |
| text passkey | {heldout['text_em']:.3f} |

<!-- recorded: {recorded} -->
"""
    path = model_dir / CARD_FILE
    path.write_text(text)
    logger.info("model card -> %s", path)
    return path


def recorded_accuracy(model_dir: str | Path) -> dict:
    """The held-out accuracy the card records (the hidden ``recorded:`` line)."""
    for line in (Path(model_dir) / CARD_FILE).read_text().splitlines():
        if line.startswith("<!-- recorded: "):
            return json.loads(line.removeprefix("<!-- recorded: ").removesuffix(" -->"))
    raise ValueError(f"{model_dir}/{CARD_FILE} has no recorded accuracy line")


def _load_state(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))
