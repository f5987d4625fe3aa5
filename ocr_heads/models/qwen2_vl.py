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

from ocr_heads.models import register_family
from ocr_heads.models.base import ImageTokens, ModelAdapter, ModelInputs, context_offsets

IMAGE_PAD = "<|image_pad|>"
# The paper's pixel budget: 4 .. 256 LLM tokens per page (Qwen2-VL: 28x28 px each).
PAPER_MIN_TOKENS = 4
PAPER_MAX_TOKENS = 256
MIN_PIXELS = PAPER_MIN_TOKENS * 28 * 28
MAX_PIXELS = PAPER_MAX_TOKENS * 28 * 28
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


@register_family("qwen2_vl")
class Qwen2VLAdapter(ModelAdapter):
    """Qwen2-VL; the later Qwen families (:mod:`ocr_heads.models.qwen_family`) subclass it and change only
    the model class, the chat template and, through the processor, the tile size."""

    model_class: type = Qwen2VLForConditionalGeneration
    chat_template: str = QWEN2_VL_CHAT_TEMPLATE
    chat_template_kwargs: dict = {}  # extra variables for the chat template (e.g. Qwen3.5's enable_thinking)
    family: str = "Qwen2-VL"

    def __init__(
        self,
        model_id: str,
        dtype: torch.dtype | str | None = None,
        device_map: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        **unsupported: object,
    ) -> None:
        if unsupported:
            raise ValueError(f"{self.family} resizes pages by min/max pixels, not by {sorted(unsupported)}")
        self._load(self.model_class, model_id, dtype, device_map, self.chat_template)
        config = self.model.config
        self.image_token_id = config.image_token_id
        self.merge_size = config.vision_config.spatial_merge_size
        self.patch_size = config.vision_config.patch_size
        tile = self.tile_size
        # The paper's budget in this family's tiles: 4 .. 256 LLM tokens a page.
        min_pixels = min_pixels or PAPER_MIN_TOKENS * tile * tile
        max_pixels = max_pixels or PAPER_MAX_TOKENS * tile * tile
        # Published configs carry top-level min_pixels/max_pixels, which override `size`: pass both.
        self.image_processor = AutoImageProcessor.from_pretrained(
            model_id, size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
            min_pixels=min_pixels, max_pixels=max_pixels,
        )
        processor = self.image_processor
        effective = (processor.size["shortest_edge"], processor.size["longest_edge"])
        if effective != (min_pixels, max_pixels):
            raise ValueError(f"{model_id}: the image processor resizes to {effective} pixels, not the "
                             f"requested ({min_pixels}, {max_pixels})")
        if (processor.patch_size, processor.merge_size) != (self.patch_size, self.merge_size):
            raise ValueError(f"{model_id}: the image processor's patch/merge size ({processor.patch_size}, "
                             f"{processor.merge_size}) differ from the vision tower's ({self.patch_size}, "
                             f"{self.merge_size})")
        if self.tokenizer.convert_tokens_to_ids(IMAGE_PAD) != self.image_token_id:
            raise ValueError(f"{model_id}: tokenizer's {IMAGE_PAD} id does not match config.image_token_id")

    @property
    def tile_size(self) -> int:
        """Side in resized-image pixels of the square one LLM image token covers (28 for Qwen2-VL)."""
        return self.patch_size * self.merge_size

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
        starts = self._image_starts(inputs.input_ids[0], counts)
        inputs.image_tokens = [
            ImageTokens(page=i, start=start, tile_boxes=self._tile_boxes(grids[i], pages[i].size))
            for i, start in enumerate(starts)
        ]
        return inputs

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True,
            **self.chat_template_kwargs,
        )
        if prompt.count(IMAGE_PAD) != len(image_token_counts):
            raise ValueError(f"chat template produced {prompt.count(IMAGE_PAD)} image placeholders "
                             f"for {len(image_token_counts)} pages")
        pieces = prompt.split(IMAGE_PAD)
        prompt = pieces[0] + "".join(IMAGE_PAD * n + piece for n, piece in zip(image_token_counts, pieces[1:],
                                                                               strict=True))
        encoded = self.tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=False)
        input_ids = torch.tensor([encoded["input_ids"]])
        offsets = context_offsets(prompt, encoded["offset_mapping"], context)
        tensors = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            # 0 text, 1 image: M-RoPE needs it for 2-D image positions.
            "mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32),
        }
        return ModelInputs(tensors=tensors, context_offsets=offsets)

    def _image_starts(self, input_ids: torch.Tensor, counts: list[int]) -> list[int]:
        positions = (input_ids == self.image_token_id).nonzero().flatten().tolist()
        if len(positions) != sum(counts):
            raise ValueError(f"{len(positions)} image tokens in the prompt, the processor made {sum(counts)}")
        starts, cursor = [], 0
        for count in counts:
            start = positions[cursor]
            if positions[cursor + count - 1] != start + count - 1:
                raise ValueError("image tokens of one page are not contiguous")
            starts.append(start)
            cursor += count
        return starts

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
