"""Train the toy Qwen2-VL on CPU: passkeys read from tile-exact pages and copied from text.

    python -m ocr_heads.toy.train --out models/toy-qwen2-vl

Recipe (measured in docs/toy_model.md): the model is a plain ``Qwen2VLForConditionalGeneration``
built by :func:`ocr_heads.models.tiny.build.build_tiny_qwen2_vl` with the project's character tokenizer.

1. *Text warm-up*: the text task alone (context + question -> key), so the language model first
   learns to find "The pass key is" and copy the digits after it.
2. *Joint*: image and text batches every step, plus an auxiliary tile loss: every LLM image token
   (the merger output of one 28x28 tile) must predict the character drawn in it, scored against the
   language model's input token embeddings. That is what pre-training gives real LVLMs (tiles whose
   embeddings look like the text they show); without it joint training from scratch stayed at chance.

Inputs are built by the project's own adapter (``image_inputs`` / ``text_inputs``), so training and
the pipeline see byte-identical prompts. Every batch is drawn from a generator seeded by
(seed, step), the model has no dropout, and a checkpoint is written every ``--checkpoint-every``
steps: an interrupted run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ocr_heads.core.commandline import Parser
from ocr_heads.core.io import write_json_atomic
from ocr_heads.models import ModelAdapter, load_adapter
from ocr_heads.models.protocol import DECLARED_KEY
from ocr_heads.models.tiny.build import build_tiny_qwen2_vl
from ocr_heads.toy.data import QUESTION, QUESTION_VARIANTS, TOY_PROTOCOL, ToySample, make_sample, sample_rng

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "training_log.json"


@dataclass
class TrainConfig:
    seed: int = 0
    layers: int = 6
    hidden: int = 128
    heads: int = 8
    kv_heads: int = 4
    vision_depth: int = 2
    vision_embed: int = 64
    batch: int = 16
    text_steps: int = 600  # phase 1: text task only
    joint_steps: int = 1500  # phase 2: image + text + auxiliary tile loss
    lr: float = 1e-3
    warmup: int = 50  # linear lr warm-up at the start of each phase
    min_lr_ratio: float = 0.1  # phase 2 decays (cosine) to lr * min_lr_ratio
    aux_weight: float = 1.0
    weight_decay: float = 0.01
    eval_every: int = 100
    eval_n: int = 64
    checkpoint_every: int = 50

    @property
    def total_steps(self) -> int:
        return self.text_steps + self.joint_steps

    def lr_at(self, step: int) -> float:
        if step < self.text_steps:
            return self.lr * min(1.0, (step + 1) / self.warmup)
        k = step - self.text_steps
        warm = min(1.0, (k + 1) / self.warmup)
        progress = k / max(1, self.joint_steps - 1)
        cosine = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * warm * cosine


# ---------------------------------------------------------------- batches


@dataclass
class Batch:
    tensors: dict[str, torch.Tensor]  # model inputs (input_ids, attention_mask, mm_token_type_ids, [pixels])
    labels: torch.Tensor  # next-token targets at each position, -100 where no loss
    tile_targets: torch.Tensor | None  # character token id of every image token (image batches)


def encode(adapter: ModelAdapter, sample: ToySample, modality: str, question: str) -> dict:
    """Prompt (through the adapter, as the pipeline builds it) + answer + end-of-turn, with targets."""
    tokenizer = adapter.tokenizer
    if modality == "image":
        inputs = adapter.image_inputs(sample.layout.render(), question)
    else:
        inputs = adapter.text_inputs(sample.context, question)
    answer = tokenizer(sample.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    prompt = inputs.input_ids[0].tolist()
    ids = prompt + answer
    item = {
        "input_ids": ids,
        "mm_token_type_ids": inputs.tensors["mm_token_type_ids"][0].tolist() + [0] * len(answer),
        # Position p predicts token p + 1: only the answer and the end-of-turn are trained.
        "labels": [-100] * (len(prompt) - 1) + answer + [-100],
    }
    if modality == "image":
        item["pixel_values"] = inputs.tensors["pixel_values"]
        item["image_grid_thw"] = inputs.tensors["image_grid_thw"]
        item["tiles"] = tokenizer.convert_tokens_to_ids(sample.layout.tile_chars(0))
    return item


def collate(items: list[dict], pad_id: int) -> Batch:
    """Right-pad to the longest item (M-RoPE positions skip padding through the attention mask)."""
    width = max(len(item["input_ids"]) for item in items)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([item[key] + [value] * (width - len(item[key])) for item in items])

    tensors = {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": torch.tensor([[1] * len(i["input_ids"]) + [0] * (width - len(i["input_ids"]))
                                        for i in items]),
        "mm_token_type_ids": pad("mm_token_type_ids", 0).to(torch.int32),
    }
    tiles = None
    if "pixel_values" in items[0]:
        tensors["pixel_values"] = torch.cat([item["pixel_values"] for item in items])
        tensors["image_grid_thw"] = torch.cat([item["image_grid_thw"] for item in items])
        tiles = torch.tensor([t for item in items for t in item["tiles"]])
    return Batch(tensors, pad("labels", -100), tiles)


def make_batch(adapter: ModelAdapter, modality: str, seed: int, split: str, start: int, size: int,
               questions: tuple[str, ...] = QUESTION_VARIANTS) -> Batch:
    items = []
    for index in range(start, start + size):
        rng = sample_rng(seed, f"{split}:{modality}", index)
        sample = make_sample(rng)
        items.append(encode(adapter, sample, modality, rng.choice(questions)))
    return collate(items, adapter.tokenizer.pad_token_id)


# ---------------------------------------------------------------- losses


def batch_losses(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(answer cross-entropy, auxiliary tile loss or None, logits)."""
    tensors = dict(batch.tensors)
    aux = None
    if "pixel_values" in tensors:
        vision = model.model.get_image_features(tensors.pop("pixel_values"), tensors["image_grid_thw"],
                                                return_dict=True)
        tiles = torch.cat(vision.pooler_output)
        embeddings = model.model.language_model.embed_tokens.weight
        aux = F.cross_entropy(tiles @ embeddings.T, batch.tile_targets)
        tensors["mm_encoder_outputs"] = {"image": vision}
    logits = model(**tensors, use_cache=False).logits
    loss = F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100)
    return loss, aux, logits


@torch.no_grad()
def teacher_forced_em(model: torch.nn.Module, batch: Batch) -> float:
    """Fraction of samples whose every answer token (and end-of-turn) is the argmax given the true prefix.

    For greedy decoding this equals exact match: a correct prefix makes the next greedy token the
    teacher-forced argmax, so greedy output is the answer exactly when all of these are right.
    """
    _, _, logits = batch_losses(model, batch)
    mask = batch.labels != -100
    correct = (logits.argmax(-1) == batch.labels) | ~mask
    return float(correct.all(dim=1).float().mean())


# ---------------------------------------------------------------- training


def build_model(out: Path, cfg: TrainConfig) -> ModelAdapter:
    """The untrained model saved to ``out`` and loaded back through the project's adapter."""
    build_tiny_qwen2_vl(out, seed=cfg.seed, num_layers=cfg.layers, hidden_size=cfg.hidden, num_heads=cfg.heads,
                        num_kv_heads=cfg.kv_heads, vision_depth=cfg.vision_depth,
                        vision_embed_dim=cfg.vision_embed)
    adapter = load_adapter(str(out), protocol=TOY_PROTOCOL)
    # build_tiny_qwen2_vl labels its weights random; these are about to be trained.
    if hasattr(adapter.model.config, "ocr_heads_random_weights"):
        delattr(adapter.model.config, "ocr_heads_random_weights")
    return adapter


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(out: Path, cfg: TrainConfig) -> dict:
    """Train (resuming from ``out/train_state.pt`` when present); returns the training log."""
    torch.manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    adapter = build_model(out, cfg)
    model = adapter.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history: dict = {"config": asdict(cfg), "steps": [], "evals": [], "elapsed_s": 0.0}
    start = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        if state["history"]["config"] != asdict(cfg):
            raise ValueError(f"{state_path} was written with another config; delete it or use the same flags")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["step"]
        logger.info("resuming from step %d (%.0f s trained so far)", start, history["elapsed_s"])
    pad_id = adapter.tokenizer.pad_token_id
    # Fixed validation batches (their own stream, never trained on), bare step2 question.
    val = {m: make_batch(adapter, m, cfg.seed, "val", 0, cfg.eval_n, (QUESTION,)) for m in ("image", "text")}
    t0 = time.perf_counter() - history["elapsed_s"]
    bar = tqdm(range(start, cfg.total_steps), initial=start, total=cfg.total_steps, desc="train", unit="step")
    for step in bar:
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(step)
        joint = step >= cfg.text_steps
        text = make_batch(adapter, "text", cfg.seed, "train", step * cfg.batch, cfg.batch)
        text_loss, _, _ = batch_losses(model, text)
        loss, record = text_loss, {"step": step, "lr": cfg.lr_at(step), "text_loss": text_loss.item()}
        if joint:
            image = make_batch(adapter, "image", cfg.seed, "train", step * cfg.batch, cfg.batch)
            image_loss, aux, _ = batch_losses(model, image)
            loss = loss + image_loss + cfg.aux_weight * aux
            record.update(image_loss=image_loss.item(), aux_loss=aux.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        record["elapsed_s"] = round(time.perf_counter() - t0, 2)
        history["steps"].append(record)
        bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k.endswith("loss")})
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.total_steps:
            model.eval()
            evaluation = {"step": done, "elapsed_s": record["elapsed_s"],
                          **{f"{m}_em": teacher_forced_em(model, b) for m, b in val.items()}}
            history["evals"].append(evaluation)
            logger.info("step %d: validation image EM %.3f, text EM %.3f (%.0f s)", done,
                        evaluation["image_em"], evaluation["text_em"], evaluation["elapsed_s"])
        history["elapsed_s"] = time.perf_counter() - t0
        if done % cfg.checkpoint_every == 0 and done < cfg.total_steps:
            _save_state(state_path, {"step": done, "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(), "history": history})
    model.eval()
    model.generation_config.pad_token_id = pad_id
    # Trained on pages at their own resolution: commands load it so unless --protocol says otherwise.
    setattr(model.config, DECLARED_KEY, TOY_PROTOCOL)
    model.save_pretrained(out)
    write_json_atomic(out / LOG_FILE, history)
    state_path.unlink(missing_ok=True)
    logger.info("trained %d steps in %.1f min -> %s", cfg.total_steps, history["elapsed_s"] / 60, out)
    return history


def parse_config(argv: list[str] | None) -> tuple[argparse.Namespace, TrainConfig]:
    defaults = TrainConfig()
    parser = Parser(
        description="Train the toy Qwen2-VL (passkeys from tile-exact pages and from text) on CPU, "
        "deterministically. Reads nothing (data is generated); resumes from OUT/train_state.pt.",
        epilog="Writes OUT/model.safetensors, config.json, generation_config.json, tokenizer and "
        f"preprocessor files, OUT/{LOG_FILE} (losses, validation EM), OUT/MODEL_CARD.md and the loss "
        "curve (--plot). The held-out evaluation uses ocr_heads.toy.evaluate.",
    )
    parser.add_argument("--out", required=True, type=Path, help="model directory (created)")
    parser.add_argument("--plot", type=Path, default=Path("docs/toy_training.png"), help="loss-curve PNG")
    parser.add_argument("--heldout-n", type=int, default=200, help="held-out samples per task for the card")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared 2-core machine more threads contend)")
    parser.add_argument("--heldout-seed", type=int, default=12345, help="held-out sample seed for the card")
    for name, value in asdict(defaults).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                            help=f"(default {value})")
    args = parser.parse_args(argv)
    cfg = TrainConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    return args, cfg


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse_config(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    history = train(args.out, cfg)
    from ocr_heads.toy.card import plot_training, write_model_card
    from ocr_heads.toy.evaluate import evaluate

    adapter = load_adapter(str(args.out), protocol=TOY_PROTOCOL)
    heldout = evaluate(adapter, args.heldout_n, args.heldout_seed)
    plot_training(history, args.plot)
    write_model_card(args.out, history, heldout, args.heldout_seed,
                     command="python -m ocr_heads.toy.train " + " ".join(argv if argv is not None else
                                                                        sys.argv[1:]), threads=args.threads)
    print(json.dumps({"train_minutes": round(history["elapsed_s"] / 60, 1), **heldout}))


if __name__ == "__main__":
    main()
