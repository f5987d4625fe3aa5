"""Qwen2-VL adapter: all Qwen2-VL-specific knowledge lives here.

Inputs are composed from ``AutoImageProcessor`` + ``AutoTokenizer`` rather than ``AutoProcessor``:
in transformers 5.x the processor insists on a torchvision-only video processor. Each image
placeholder is expanded to ``image_grid_thw.prod() // merge_size**2`` image-pad tokens, as the
processor would, and ``mm_token_type_ids`` always accompanies the ids (without it ``generate``
silently gives image tokens 1-D positions). Tile geometry comes from ``image_grid_thw`` alone.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from ocr_heads.models.base import (
    ImageTokens,
    ModelAdapter,
    ModelInputs,
    contiguous_runs,
    expand_placeholders,
)
from ocr_heads.models.families import qwen as declaration
from ocr_heads.models.protocol import PAPER, check_protocol

IMAGE_PAD = "<|image_pad|>"
# The paper's pixel budget (authors' utils/loader.py: min_pixels = max_pixels = 256*28*28): every page is
# resized to about 256 LLM tokens of 28x28 px, small pages upscaled. Later Qwen families keep 256 tokens in
# their own tile size (Qwen3-VL: 32 px).
PAPER_TOKENS = 256
PAPER_PIXELS = PAPER_TOKENS * 28 * 28
# The tiny models' own (native) processor bounds: at most the paper's budget, small pages kept small.
MIN_PIXELS = 4 * 28 * 28
MAX_PIXELS = PAPER_PIXELS
# Qwen2-VL's chat format (user turns with images and text): used when a checkpoint ships no chat
# template, and by the project's own tiny tokenizer.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL; the later Qwen families (:mod:`ocr_heads.models.qwen_family`) subclass it and change only
    the model class, the chat template and, through the processor, the tile size."""

    CONFIG_TOKENS = {"image_token_id": IMAGE_PAD, "video_token_id": "<|video_pad|>",
                     "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    model_class: type = Qwen2VLForConditionalGeneration
    chat_template: str = QWEN2_VL_CHAT_TEMPLATE
    chat_template_kwargs: dict = {}  # extra variables for the chat template (e.g. Qwen3.5's enable_thinking)
    family: str = "Qwen2-VL"
    KNOBS = declaration.KNOBS  # declared once, torch-free, where the registry reads it

    image_token = IMAGE_PAD

    def setup(self, model_id: str) -> None:
        config = self.config
        self.merge_size = config.vision_config.spatial_merge_size
        self.patch_size = config.vision_config.patch_size
        budget = pixel_budget(self.protocol, self.knobs["min_pixels"], self.knobs["max_pixels"], self.tile_size)
        # As keyword arguments they replace the config's top-level min/max_pixels (published hub configs carry
        # them, and the processor's __init__ lets them overwrite any `size`), so the budget holds on real files.
        self.image_processor = AutoImageProcessor.from_pretrained(model_id, **budget)
        processor = self.image_processor
        self.min_pixels = int(processor.size["shortest_edge"])
        self.max_pixels = int(processor.size["longest_edge"])
        effective = {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
        if any(effective[key] != value for key, value in budget.items()):
            raise ValueError(f"{model_id}: asked the image processor for {budget}, it uses {effective}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"{model_id}: min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        if (processor.patch_size, processor.merge_size) != (self.patch_size, self.merge_size):
            raise ValueError(f"{model_id}: the image processor's patch/merge size ({processor.patch_size}, "
                             f"{processor.merge_size}) differ from the vision tower's ({self.patch_size}, "
                             f"{self.merge_size})")

    @property
    def tile_size(self) -> int:
        """Side in resized-image pixels of the square one LLM image token covers (28 for Qwen2-VL)."""
        return self.patch_size * self.merge_size

    def settings(self) -> dict:
        return {"protocol": self.protocol, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels}

    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        tile = self.tile_size
        height, width = smart_resize(page_size[1], page_size[0], factor=tile, min_pixels=self.min_pixels,
                                     max_pixels=self.max_pixels)
        return (height // tile) * (width // tile)

    # -- inputs -------------------------------------------------------------------------------------

    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        if not pages:
            raise ValueError("image_inputs needs at least one page")
        content = [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]
        vision = self.image_processor(images=[page.convert("RGB") for page in pages], return_tensors="pt")
        grids = vision["image_grid_thw"]
        counts = [int(grid.prod()) // self.merge_size**2 for grid in grids]
        inputs = self._tokenize(content, context=None, image_token_counts=counts)
        inputs.tensors.update(pixel_values=vision["pixel_values"], image_grid_thw=grids)
        starts = contiguous_runs(inputs.input_ids[0], self.image_token_id, counts)
        inputs.image_tokens = [
            ImageTokens(page=i, start=start, tile_boxes=self._tile_boxes(grids[i], pages[i].size),
                        layout=self._layout(grids[i]))
            for i, start in enumerate(starts)
        ]
        return inputs

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True,
            **self.chat_template_kwargs,
        )
        prompt = expand_placeholders(prompt, IMAGE_PAD, [IMAGE_PAD * n for n in image_token_counts])
        input_ids, offsets = self.encode_prompt(prompt, context)
        tensors = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            # 0 text, 1 image: M-RoPE needs it for 2-D image positions.
            "mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32),
        }
        return ModelInputs(tensors=tensors, context_offsets=offsets)

    def _layout(self, grid_thw: torch.Tensor) -> str:
        _, grid_h, grid_w = (int(v) for v in grid_thw)
        tile = self.patch_size * self.merge_size
        return (f"{grid_h // self.merge_size} x {grid_w // self.merge_size} tokens (rows x cols) of {tile}x{tile} px "
                f"on the page resized to {grid_w * self.patch_size}x{grid_h * self.patch_size}")

    def _tile_boxes(self, grid_thw: torch.Tensor, page_size: tuple[int, int]) -> np.ndarray:
        """Row-major LLM-token tiles of one page, mapped back from the resized image to page pixels."""
        _, grid_h, grid_w = (int(v) for v in grid_thw)
        rows, cols = grid_h // self.merge_size, grid_w // self.merge_size
        tile = self.tile_size  # on the resized image
        resized_w, resized_h = grid_w * self.patch_size, grid_h * self.patch_size
        scale_x, scale_y = page_size[0] / resized_w, page_size[1] / resized_h
        r, c = np.divmod(np.arange(rows * cols), cols)
        return np.stack(
            [c * tile * scale_x, r * tile * scale_y, (c + 1) * tile * scale_x, (r + 1) * tile * scale_y], axis=1
        ).astype(np.float64)


def pixel_budget(protocol: str, min_pixels: int | None, max_pixels: int | None, tile: int = 28) -> dict[str, int]:
    """The min/max pixels to pass to the image processor (only those to change from the checkpoint's).

    ``paper`` sets both to :data:`PAPER_TOKENS` tiles of ``tile`` px (:data:`PAPER_PIXELS` for Qwen2-VL);
    an explicit bound overrides its own side, and the other side of the paper's budget moves with it when
    they would cross (``--max_pixels`` below the budget lowers min_pixels to it). ``native`` passes only
    the explicit bounds.
    """
    check_protocol(protocol)
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise ValueError(f"min_pixels {min_pixels} > max_pixels {max_pixels}")
    budget: dict[str, int] = {}
    if protocol == PAPER:
        paper = PAPER_TOKENS * tile * tile
        budget = {"min_pixels": paper, "max_pixels": paper}
        if min_pixels is not None:
            budget["max_pixels"] = max(paper, min_pixels)
        if max_pixels is not None:
            budget["min_pixels"] = min(paper, max_pixels)
    if min_pixels is not None:
        budget["min_pixels"] = min_pixels
    if max_pixels is not None:
        budget["max_pixels"] = max_pixels
    return budget
