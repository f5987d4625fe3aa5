"""The checks every model family passes, written once and called from each tests/test_family_*.py.

Each check takes a loaded adapter and computes its reference plainly here: eager attention with
``output_attentions`` for capture, an o_proj forward pre-hook for masking, a row-by-row eager sink
edit for redistribution, the model's own vision features for token counts.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image, ImageDraw
from test_interventions import REFERENCE, REFERENCE_BETA, REFERENCE_HEADS, prompt_inputs

import step3_extracted_heads
from ocr_heads.attention import capture, text_attention, verify_against_eager
from ocr_heads.attention.edits import mask_heads, redistribute_sink_heads
from ocr_heads.pipeline import step1
from ocr_heads.pipeline.step2 import main as step2_main

STEP1_PAGE = (635, 482)  # the size of a rendered step1 page


def block_means(frames: torch.Tensor, grid: int) -> np.ndarray:
    """Per LLM token (frames in order, each a row-major ``grid x grid`` of square pixel blocks), the mean of its block
    of ``frames`` (frames, H, W): a token's intensity as the processor's own pixels show it."""
    cell = frames.shape[-1] // grid
    return frames.reshape(len(frames), grid, cell, grid, cell).mean(dim=(2, 4)).reshape(-1).numpy()


def build_tiny_family(tmp_path_factory, family: str, name: str | None = None):
    """The acceptance command ``python -m ocr_heads.models.tiny --family F --out DIR``, in-process; returns DIR."""
    from ocr_heads.models.tiny.build import main as tiny_main

    out = tmp_path_factory.mktemp("models") / (name or f"tiny-{family}")
    assert tiny_main(["--family", family, "--out", str(out)]) == 0
    return out


def with_generated(inputs, generated: list[int]) -> dict[str, torch.Tensor]:
    """Prompt + generated[:-1] as one input (for one no-cache forward); text-token extras padded with 0."""
    tail = torch.tensor([generated[:-1]], dtype=inputs.input_ids.dtype)
    tensors = dict(inputs.tensors)
    for name in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
        if name in tensors:
            extra = tail if name == "input_ids" else torch.full_like(tail, int(name == "attention_mask"))
            tensors[name] = torch.cat([tensors[name], extra.to(tensors[name].dtype)], dim=1)
    return tensors


def eager_producing_rows(adapter, inputs, generated: list[int]) -> list[torch.Tensor]:
    """Per layer, eager (heads, steps, keys) probabilities of rows P-1 .. P+G-2 (they produced the G tokens)."""
    with text_attention(adapter, "eager"), torch.no_grad():
        attentions = adapter.model(**with_generated(inputs, generated), output_attentions=True,
                                   use_cache=False).attentions
    return [layer[0, :, inputs.prompt_length - 1 :, :] for layer in attentions]


MODALITIES = ("image", "text")  # what a vision-language model reads; a text-only LM passes ("text",)


def check_capture_equals_eager(adapter, passkey_dir, steps: int = 5, modalities=MODALITIES) -> None:
    """Every step, layer and head: captured argmax == eager argmax over the prompt, sink == eager p(key 0)."""
    shape = adapter.shape
    for modality in modalities:
        inputs = prompt_inputs(adapter, passkey_dir, 0, modality)
        plain = adapter.generate(inputs, max_new_tokens=steps)
        with capture(adapter) as recorder:
            generated = adapter.generate(inputs, max_new_tokens=steps)
        assert generated == plain, "capture changed generation"
        record = recorder.result()
        assert record.argmax.shape == (steps, shape.num_layers, shape.num_heads)
        prompt = inputs.prompt_length
        for layer, probs in enumerate(eager_producing_rows(adapter, inputs, generated)):
            assert torch.equal(record.argmax[:, layer], probs[:, :, :prompt].argmax(-1).T), (modality, layer)
            torch.testing.assert_close(record.sink[:, layer], probs[:, :, 0].T, atol=1e-5, rtol=1e-4)
        assert verify_against_eager(adapter, inputs, generated, record) == []
    assert adapter.model.config.get_text_config()._attn_implementation == "sdpa"


def check_masking_equals_o_proj_hook(adapter, passkey_dir, heads: list[tuple[int, int]],
                                     modalities=MODALITIES) -> None:
    """Masking heads == zeroing their slices of the o_proj input with a pre-hook, prefill and decode."""
    d = adapter.shape.head_dim

    def zeroing(head):
        def hook(module, args):
            hidden = args[0].clone()
            hidden[..., head * d : (head + 1) * d] = 0
            return (hidden,)
        return hook

    for modality in modalities:
        inputs = prompt_inputs(adapter, passkey_dir, 1, modality)
        with torch.no_grad():
            plain = adapter.model(**inputs.tensors).logits
        hooks = [adapter.attention_modules()[layer].o_proj.register_forward_pre_hook(zeroing(head))
                 for layer, head in heads]
        try:
            with torch.no_grad():
                reference = adapter.model(**inputs.tensors).logits
            reference_tokens = adapter.generate(inputs, max_new_tokens=4)
        finally:
            for hook in hooks:
                hook.remove()
        with mask_heads(adapter, [f"l{layer}_h{head}" for layer, head in heads]), torch.no_grad():
            masked = adapter.model(**inputs.tensors).logits
            tokens = adapter.generate(inputs, max_new_tokens=4)
        torch.testing.assert_close(masked, reference, rtol=0, atol=1e-6)
        assert tokens == reference_tokens
        assert not torch.allclose(masked, plain, atol=1e-4), "the masked heads changed nothing"


def check_sink_equals_eager_reference(adapter, passkey_dir, by_layer: dict[int, list[int]], beta: float = 0.3,
                                      reference: str = REFERENCE, configure=None, modalities=MODALITIES,
                                      atol: float = 1e-5) -> None:
    """Sink redistribution (sdpa + edit, with a KV cache) == eager attention edited row by row (no cache).

    ``reference``: the registered attention function computing the reference (heads and beta read from
    test_interventions' REFERENCE_HEADS / REFERENCE_BETA); ``configure(tensors)`` runs before each of its forwards.
    """
    heads = [f"l{layer}_h{head}" for layer, hs in by_layer.items() for head in hs]
    for modality in modalities:
        inputs = prompt_inputs(adapter, passkey_dir, 2, modality)
        with redistribute_sink_heads(adapter, heads, beta), torch.no_grad():
            ours = adapter.model(**inputs.tensors).logits
            out = adapter.model.generate(**inputs.tensors, max_new_tokens=4, do_sample=False, num_beams=1,
                                         temperature=None, top_p=None, top_k=None, output_logits=True,
                                         return_dict_in_generate=True)
        generated = out.sequences[0, inputs.prompt_length :].tolist()
        REFERENCE_HEADS.clear()
        REFERENCE_HEADS.update(by_layer)
        REFERENCE_BETA[0] = beta
        full_tensors = with_generated(inputs, generated)
        with text_attention(adapter, reference), torch.no_grad():
            if configure:
                configure(inputs.tensors)
            expected = adapter.model(**inputs.tensors, use_cache=False).logits
            if configure:
                configure(full_tensors)
            full = adapter.model(**full_tensors, use_cache=False).logits
        torch.testing.assert_close(ours, expected, rtol=0, atol=atol)
        torch.testing.assert_close(torch.cat(out.logits), full[0, inputs.prompt_length - 1 :], rtol=0, atol=atol)
        with torch.no_grad():
            assert not torch.allclose(ours, adapter.model(**inputs.tensors).logits, atol=1e-5)
    assert adapter.model.config.get_text_config()._attn_implementation == "sdpa"


def check_step1_to_step3(model_dir, tmp_path, num_layers: int, num_heads: int, modalities=MODALITIES) -> None:
    """step1 (2 passkey pages) -> step2 image and text (those of ``modalities``) with --verify-eager -> step3, all
    exit 0."""
    data = tmp_path / "data"
    parser = step1.build_parser("passkey", "test")
    step1.run("passkey", parser.parse_args(["--out", str(data), "--n", "2", "--lengths", "200"]))
    heads = [f"l{layer}_h{head}" for layer in range(num_layers) for head in range(num_heads)]
    for kind, suffix in (("image", "fg"), ("text", "te")):
        if kind not in modalities:
            continue
        argv = ["--model_id", str(model_dir), "--data", str(data), "--out", str(tmp_path / "scores"),
                "--max_new_tokens", "4", "--n", "2", "--verify-eager"]
        assert step2_main(kind, argv) == 0
        score_file = tmp_path / "scores" / kind / f"{model_dir.name}_{suffix}.json"
        assert list(json.loads(score_file.read_text())) == heads  # one key per (layer, head) of the config
        meta = json.loads(score_file.with_name(f"{model_dir.name}_{suffix}.meta.json").read_text())
        assert meta["n_samples"] == 2 and meta["n_failed"] == 0 and "noise" in meta["warning"]
        if meta["n_events"] == 0:
            # A random model need not write the answer: step3 then refuses the file in one line.
            assert step3_extracted_heads.main(["--scores", str(score_file), "--out", str(tmp_path / "h.json")]) == 2
            continue
        out = tmp_path / f"heads_{suffix}.json"
        assert step3_extracted_heads.main(["--scores", str(score_file), "--min_score", "0", "--min_frequency", "0",
                                           "--out", str(out)]) == 0
        assert {h["head"] for h in json.loads(out.read_text())["heads"]} <= set(heads)


def page_with_squares(size: tuple[int, int], seed: int = 0, count: int = 40) -> Image.Image:
    """A white page with black rectangles at seeded places (what a token shows is then easy to measure)."""
    rng = np.random.default_rng(seed)
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    for _ in range(count):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(20, 90, size=2)
        draw.rectangle((int(x), int(y), int(x + w), int(y + h)), fill="black")
    return page


def page_intensity(page: Image.Image, boxes: np.ndarray) -> np.ndarray:
    """Per box on the page, the mean intensity (0 black .. 1 white) of the pixels whose centres lie inside it."""
    pixels = np.asarray(page.convert("L"), dtype=np.float64) / 255
    first = np.ceil(boxes - 0.5).astype(int)  # pixel i (centre i + 0.5) is inside [x0, x1) when x0 <= i + 0.5 < x1
    return np.array([pixels[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in first])
