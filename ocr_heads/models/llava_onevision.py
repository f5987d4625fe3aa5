"""LLaVA-OneVision adapter (``LlavaOnevisionForConditionalGeneration``): all LLaVA-OneVision knowledge lives here.

How the processor and the model lay out a page's image tokens (transformers 5.x):

* A prompt with **one** page uses "anyres": the processor stretches the page to one ``S x S`` base
  image (S = vision ``image_size``, 384) and also resizes it, keeping its aspect ratio, into the best
  grid resolution (``select_best_resolution`` over ``image_grid_pinpoints``), pads it centred and
  cuts it into ``S x S`` crops. The model packs the base image's ``g x g`` features (g = S // patch,
  each covering ``patch`` px of the base image), then the crops' features as one canvas grid,
  *unpadded* (``unpad_image`` drops the rows/columns of padding), bilinearly shrunk when larger
  than ``vision_aspect_ratio`` allows ("anyres_max_9": 9 crops' worth), with one ``image_newline``
  embedding after each row.
* A prompt with **several** pages: each page is padded to a square (centred, mean colour) and
  resized to ``S x S``: ``g x g`` features plus one newline.

Newline positions are image tokens that show no page pixels: their boxes are NaN, so they are never
a target. So are feature cells that show only padding. Every box is derived from the processor's
and the model's own functions (``select_best_resolution``, ``get_patch_output_size``,
``get_anyres_image_grid_shape``, ``unpad_image`` applied to a grid of cell indices), never from a
guessed square root. Inputs are composed from ``AutoImageProcessor`` + ``AutoTokenizer`` (the
processor class wants a torchvision-only video processor).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, LlavaOnevisionForConditionalGeneration
from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
from transformers.image_utils import ChannelDimension
from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape, unpad_image

from ocr_heads.models.base import (
    ImageTokens,
    ModelAdapter,
    ModelInputs,
    contiguous_runs,
    expand_placeholders,
)

IMAGE_TOKEN = "<image>"
# LLaVA-OneVision's chat format (images first, then the text, after "<|im_start|>user "): used when a
# checkpoint ships no chat template, and by the project's own tiny tokenizer.
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}\n{{ part['text'] }}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
NO_PIXELS = np.full(4, np.nan)


def _clip_to_page(boxes: np.ndarray, page_size: tuple[int, int]) -> np.ndarray:
    """Boxes clipped to the page; a box left with no area (it shows only padding) becomes NaN."""
    width, height = page_size
    clipped = np.clip(boxes, 0, [width, height, width, height])
    empty = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    clipped[empty] = np.nan
    return clipped


def _grid(rows: int, cols: int) -> np.ndarray:
    """Row-major cells ``[c, r, c + 1, r + 1]`` of a ``rows x cols`` grid."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64)


def square_page_boxes(page_size: tuple[int, int], grid: int, patch: int, side: int) -> np.ndarray:
    """Multi-page layout: the page padded to a square (centred), resized to ``side``; g x g cells of ``patch`` px."""
    width, height = page_size
    square = max(width, height)
    offset = np.array([(square - width) // 2 if height > width else 0, (square - height) // 2 if width > height
                       else 0] * 2)
    return _clip_to_page(_grid(grid, grid) * patch * square / side - offset, page_size)


def anyres_page_boxes(page_size: tuple[int, int], grid: int, patch: int, side: int, pinpoints: list[list[int]],
                      max_crops: int) -> tuple[np.ndarray, list[int]]:
    """One-page layout: base-image boxes, then the unpadded crop canvas row by row with a NaN (newline) per row.

    Also returns the positions (indices into the boxes) of the newline tokens.
    """
    width, height = page_size
    base = _grid(grid, grid) * patch * np.array([width, height, width, height]) / side
    best_h, best_w = select_best_resolution((height, width), pinpoints)
    crops_h, crops_w = get_anyres_image_grid_shape((height, width), pinpoints, side)
    if (crops_h * side, crops_w * side) != (best_h, best_w):
        raise ValueError(f"grid pinpoint {best_h}x{best_w} is not a multiple of the {side} px crop")
    resized_h, resized_w = get_patch_output_size(np.empty((1, height, width)), (best_h, best_w),
                                                 input_data_format=ChannelDimension.FIRST)
    paste_y, paste_x = (best_h - resized_h) // 2, (best_w - resized_w) // 2
    # Which canvas cells the model keeps: its own unpad_image, applied to a grid of (row, column) indices.
    rows, cols = torch.meshgrid(torch.arange(crops_h * grid), torch.arange(crops_w * grid), indexing="ij")
    kept = unpad_image(torch.stack([rows, cols]), [height, width])
    row0, col0 = int(kept[0, 0, 0]), int(kept[1, 0, 0])
    kept_h, kept_w = kept.shape[1:]
    ratio = math.sqrt(kept_h * kept_w / (max_crops * grid**2))
    out_h, out_w = (int(kept_h // ratio), int(kept_w // ratio)) if ratio > 1.1 else (kept_h, kept_w)
    # Each output cell spans kept_h / out_h canvas cells (1 unless the model shrinks the grid bilinearly).
    cells = _grid(out_h, out_w) * np.array([kept_w / out_w, kept_h / out_h] * 2) + [col0, row0, col0, row0]

    def canvas_px(units: np.ndarray, right: bool) -> np.ndarray:
        """Cell units -> canvas pixels: crop k holds cells k*g .. k*g+g-1, each ``patch`` px from the crop's origin
        (the last ``side - g * patch`` px of a crop feed no feature). A right edge on a crop border closes crop k-1."""
        crop = np.ceil(units / grid) - 1 if right else np.floor(units / grid)
        crop = np.maximum(crop, 0)
        return crop * side + (units - crop * grid) * patch

    canvas = np.concatenate([canvas_px(cells[:, :2], right=False), canvas_px(cells[:, 2:], right=True)], axis=1)
    scale = np.array([width / resized_w, height / resized_h] * 2)
    crops = _clip_to_page((canvas - [paste_x, paste_y, paste_x, paste_y]) * scale, page_size)
    rows_with_newline = np.concatenate([crops.reshape(out_h, out_w, 4), np.full((out_h, 1, 4), np.nan)], axis=1)
    newlines = [grid * grid + r * (out_w + 1) + out_w for r in range(out_h)]
    return np.concatenate([base, rows_with_newline.reshape(-1, 4)]), newlines


class LlavaOnevisionAdapter(ModelAdapter):
    CONFIG_TOKENS = {"image_token_index": IMAGE_TOKEN, "video_token_index": "<video>",
                     "image_token_id": IMAGE_TOKEN, "video_token_id": "<video>"}  # hub files use *_index

    family = "LLaVA-OneVision"
    model_class = LlavaOnevisionForConditionalGeneration
    chat_template = LLAVA_ONEVISION_CHAT_TEMPLATE
    image_token = IMAGE_TOKEN
    # No knobs, and `paper` = `native`: the paper has no LLaVA-OneVision setting, and the model itself chooses
    # anyres for a one-image prompt (its crop count follows config.image_grid_pinpoints, which the processor must
    # match), so there is no budget to set without leaving the model's own layout (docs/protocol.md).

    def setup(self, model_id: str) -> None:
        self.image_processor = AutoImageProcessor.from_pretrained(model_id)
        config = self.config
        if config.vision_feature_select_strategy != "full":
            raise ValueError(f"{model_id}: vision_feature_select_strategy {config.vision_feature_select_strategy!r} "
                             "is not supported (LLaVA-OneVision's SigLIP tower uses 'full')")
        self.side = int(config.vision_config.image_size)
        self.patch = int(config.vision_config.patch_size)
        self.grid = self.side // self.patch
        self.pinpoints = [list(p) for p in config.image_grid_pinpoints]
        self.max_crops = int(config.vision_aspect_ratio.removeprefix("anyres_max_"))
        crop = self.image_processor.size
        if (crop.get("height"), crop.get("width")) != (self.side, self.side):
            raise ValueError(f"{model_id}: image processor size {crop} does not match the vision tower's {self.side}")
        if [list(p) for p in self.image_processor.image_grid_pinpoints] != self.pinpoints:
            raise ValueError(f"{model_id}: the image processor's grid pinpoints differ from the model config's")

    def settings(self) -> dict:
        return {"protocol": self.protocol, "image_size": self.side, "patch_size": self.patch,
                "grid_pinpoints": len(self.pinpoints), "vision_aspect_ratio": f"anyres_max_{self.max_crops}"}

    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        """A one-page prompt: the base image's g x g, plus the unpadded (and, past anyres_max, shrunk) crop
        canvas with one newline per row; plain arithmetic on the settings, as the processor counts them."""
        width, height = page_size
        best_h, best_w = select_best_resolution((height, width), self.pinpoints)
        rows, cols = self.grid * (best_h // self.side), self.grid * (best_w // self.side)
        if width / height > cols / rows:  # wider than the canvas: padding rows above and below are dropped
            rows -= (rows - int(round(height * cols / width, 7))) // 2 * 2
        else:
            cols -= (cols - int(round(width * rows / height, 7))) // 2 * 2
        ratio = math.sqrt(rows * cols / (self.max_crops * self.grid**2))
        if ratio > 1.1:
            rows, cols = int(rows // ratio), int(cols // ratio)
        return self.grid**2 + rows * (cols + 1)

    def page_boxes(self, page_size: tuple[int, int], pages_in_prompt: int) -> np.ndarray:
        """Boxes of one page's image tokens, in prompt order (NaN where a token shows no page pixels)."""
        if pages_in_prompt == 1:
            return anyres_page_boxes(page_size, self.grid, self.patch, self.side, self.pinpoints, self.max_crops)[0]
        return np.concatenate([square_page_boxes(page_size, self.grid, self.patch, self.side), NO_PIXELS[None]])

    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        if not pages:
            raise ValueError("image_inputs needs at least one page")
        pages = [page.convert("RGB") for page in pages]
        # One sample holding all pages: the processor (and the model) switch off anyres for several images.
        vision = self.image_processor(images=[pages], return_tensors="pt")
        boxes = [self.page_boxes(page.size, len(pages)) for page in pages]
        layouts = [self._layout(b, len(pages)) for b in boxes]
        counts = [len(b) for b in boxes]
        content = [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]
        inputs = self._tokenize(content, context=None, image_token_counts=counts)
        inputs.tensors.update(pixel_values=vision["pixel_values"], image_sizes=vision["image_sizes"],
                              batch_num_images=torch.as_tensor(vision["batch_num_images"]))
        starts = contiguous_runs(inputs.input_ids[0], self.image_token_id, counts)
        inputs.image_tokens = [ImageTokens(page=i, start=s, tile_boxes=b, layout=layout)
                               for i, (s, b, layout) in enumerate(zip(starts, boxes, layouts, strict=True))]
        return inputs

    def _layout(self, boxes: np.ndarray, pages_in_prompt: int) -> str:
        g = self.grid
        if pages_in_prompt > 1:
            return f"{g} x {g} features of the page padded to a square, {self.side} px, + 1 newline"
        rows = int(np.isnan(boxes[g * g:]).all(axis=1).sum())  # crop-canvas newlines: one per row
        cols = (len(boxes) - g * g) // rows - 1
        return (f"{g} x {g} base features of the page stretched to {self.side} px, then {rows} x {cols} crop-canvas "
                f"cells + {rows} newlines")

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        prompt = expand_placeholders(prompt, IMAGE_TOKEN, [IMAGE_TOKEN * n for n in image_token_counts])
        input_ids, offsets = self.encode_prompt(prompt, context)
        tensors = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        return ModelInputs(tensors=tensors, context_offsets=offsets)
