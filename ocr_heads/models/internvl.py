"""InternVL adapter (native transformers ``InternVLForConditionalGeneration``): all InternVL knowledge lives here.

A page is cut the way the processor cuts it (GotOcr2 "crop to patches"): resized to a grid of
``cols x rows`` square tiles (448 px) whose aspect ratio is closest to the page's, plus a thumbnail
of the whole page when there is more than one tile. Every tile becomes ``image_seq_length`` (256)
LLM tokens, a row-major ``16 x 16`` grid after the vision tower's pixel shuffle, each token covering
28x28 px of its tile. So a page's image tokens are: tile 0's grid, tile 1's grid, ... (tiles
row-major), then the thumbnail's grid; each token maps back to a box on the original page through
that layout (thumbnail tokens: the grid over the whole page).

Inputs are composed from ``AutoImageProcessor`` + ``AutoTokenizer`` (the processor class insists on
a torchvision-only video processor in transformers 5.x). Each image placeholder is expanded to
``<img>`` + ``<IMG_CONTEXT>`` x (256 x tiles) + ``</img>``, as ``InternVLProcessor`` does. InternVL2
hub checkpoints (remote code, InternLM2) are converted once to this layout by
:mod:`ocr_heads.models.internvl2_convert` and then load here.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, InternVLForConditionalGeneration
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

from ocr_heads.models.base import ImageTokens, ModelAdapter, ModelInputs, expand_placeholders
from ocr_heads.models.families import internvl as declaration
from ocr_heads.models.protocol import PAPER

# Token strings of InternVLProcessor (tokenizer attributes when the checkpoint names them).
START_IMAGE = "<img>"
END_IMAGE = "</img>"
CONTEXT_IMAGE = "<IMG_CONTEXT>"
# InternVL normalises tiles with ImageNet statistics (not GotOcr2's CLIP defaults).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# The paper's tiling (authors' step2: load_image(..., max_num=1)): one 448 px tile a page, hence no thumbnail.
PAPER_MAX_PATCHES = 1
# Older chat templates (InternVL2 remote code) write this placeholder instead of <IMG_CONTEXT>.
LEGACY_PLACEHOLDER = "<image>"
# InternVL's chat format (user turns with images and text): used when a checkpoint ships no chat
# template, and by the project's own tiny tokenizer. A system turn, when given, is rendered as is.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tile_layout(page_size: tuple[int, int], tile_size: int, min_patches: int, max_patches: int) -> tuple[int, int]:
    """(cols, rows) of the tile grid the image processor chooses for a ``(width, height)`` page."""
    if max_patches <= 1:
        return 1, 1
    cols, rows = get_optimal_tiled_canvas((page_size[1], page_size[0]), (tile_size, tile_size),
                                          min_patches, max_patches)
    return cols, rows


def page_token_boxes(page_size: tuple[int, int], cols: int, rows: int, grid: int) -> np.ndarray:
    """Boxes on the original page of every LLM token of one page, in prompt order.

    Tiles row-major (each a ``grid x grid`` row-major block of tokens), then, when there is more than
    one tile, the thumbnail's ``grid x grid`` tokens spread over the whole page.
    """
    width, height = page_size
    r, c = np.divmod(np.arange(grid * grid), grid)
    cell = np.stack([c, r, c + 1, r + 1], axis=1).astype(np.float64) / grid  # token box in tile units
    # A tile is 1/cols of the width and 1/rows of the height of the resized (hence of the original) page.
    tile_scale = np.array([width / cols, height / rows, width / cols, height / rows])
    boxes = []
    for tile in range(cols * rows):
        tile_row, tile_col = divmod(tile, cols)
        boxes.append((cell + [tile_col, tile_row, tile_col, tile_row]) * tile_scale)
    if cols * rows > 1:
        boxes.append(cell * np.array([width, height, width, height]))
    return np.concatenate(boxes)


class InternVLAdapter(ModelAdapter):
    CONFIG_TOKENS = {"image_token_id": CONTEXT_IMAGE}
    KNOBS = declaration.KNOBS  # declared once, torch-free, where the registry reads it

    family = "InternVL"
    model_class = InternVLForConditionalGeneration
    chat_template = INTERNVL_CHAT_TEMPLATE

    def setup(self, model_id: str) -> None:
        self.image_processor = AutoImageProcessor.from_pretrained(model_id)
        # Passed to every processor call (below), so these are the values in effect whatever the config says.
        self.max_patches = self.knob_or_protocol("max_patches", PAPER_MAX_PATCHES, self.image_processor.max_patches)
        self.min_patches = 1 if self.protocol == PAPER else self.image_processor.min_patches
        if self.min_patches > self.max_patches:
            raise ValueError(f"{model_id}: min_patches {self.min_patches} > max_patches {self.max_patches}")
        config = self.config
        vision = config.vision_config
        self.tile_size = int(vision.image_size[0])
        if self.image_processor.size.height != self.tile_size or self.image_processor.size.width != self.tile_size:
            raise ValueError(f"{model_id}: image processor tiles of {self.image_processor.size} do not match "
                             f"the vision tower's {vision.image_size}")
        # Tokens per tile side: patches per side, halved by the pixel shuffle (downsample_ratio 0.5).
        self.grid = int(self.tile_size // vision.patch_size[0] * config.downsample_ratio)
        self.tokens_per_tile = self.grid * self.grid
        if self.tokens_per_tile != config.image_seq_length:
            raise ValueError(f"{model_id}: {self.grid}x{self.grid} tokens per tile, but config.image_seq_length is "
                             f"{config.image_seq_length}")
        self.start_image = getattr(self.tokenizer, "start_image_token", None) or START_IMAGE
        self.end_image = getattr(self.tokenizer, "end_image_token", None) or END_IMAGE
        self.context_image = getattr(self.tokenizer, "context_image_token", None) or CONTEXT_IMAGE
        self.image_token = self.context_image

    def settings(self) -> dict:
        # A thumbnail joins the tiles whenever a page is cut into more than one.
        return {"protocol": self.protocol, "min_patches": self.min_patches, "max_patches": self.max_patches,
                "thumbnail": self.max_patches > 1}

    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        cols, rows = tile_layout(page_size, self.tile_size, self.min_patches, self.max_patches)
        return self.tokens_per_tile * (cols * rows + (cols * rows > 1))

    # -- inputs -------------------------------------------------------------------------------------

    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        if not pages:
            raise ValueError("image_inputs needs at least one page")
        pages = [page.convert("RGB") for page in pages]
        vision = self.image_processor(images=pages, crop_to_patches=True, min_patches=self.min_patches,
                                      max_patches=self.max_patches, return_tensors="pt")
        layouts = [tile_layout(page.size, self.tile_size, self.min_patches, self.max_patches) for page in pages]
        tiles = [int(n) for n in vision["num_patches"]]
        expected = [cols * rows + (cols * rows > 1) for cols, rows in layouts]
        if tiles != expected:
            raise ValueError(f"image processor made {tiles} tiles per page, the tile layout predicts {expected}")
        counts = [n * self.tokens_per_tile for n in tiles]
        content = [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]
        inputs = self._tokenize(content, context=None, image_token_counts=counts)
        inputs.tensors["pixel_values"] = vision["pixel_values"]
        starts = self._image_starts(inputs.input_ids[0], counts)
        inputs.image_tokens = [
            ImageTokens(page=i, start=start, tile_boxes=page_token_boxes(pages[i].size, *layouts[i], self.grid),
                        layout=self._layout(*layouts[i]))
            for i, start in enumerate(starts)
        ]
        return inputs

    def _layout(self, cols: int, rows: int) -> str:
        extra = " + a thumbnail of the whole page" if cols * rows > 1 else ", no thumbnail"
        return (f"{cols} x {rows} tiles (cols x rows) of {self.tile_size} px, {self.grid} x {self.grid} tokens "
                f"each{extra}")

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        placeholder = self.context_image if self.context_image in prompt or not image_token_counts \
            else LEGACY_PLACEHOLDER
        page_tokens = [f"{self.start_image}{self.context_image * n}{self.end_image}" for n in image_token_counts]
        prompt = expand_placeholders(prompt, placeholder, page_tokens)
        # Special tokens on: Llama-style tokenizers (InternLM2) start with <s>, as InternVL2's chat() does.
        input_ids, offsets = self.encode_prompt(prompt, context, add_special_tokens=True)
        tensors = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        return ModelInputs(tensors=tensors, context_offsets=offsets)

    def _image_starts(self, input_ids: torch.Tensor, counts: list[int]) -> list[int]:
        """First image token of every page: the one after each ``<img>``, checked against the expected run."""
        ids = input_ids.tolist()
        start_id = self.tokenizer.convert_tokens_to_ids(self.start_image)
        end_id = self.tokenizer.convert_tokens_to_ids(self.end_image)
        starts = [i + 1 for i, token in enumerate(ids) if token == start_id]
        if len(starts) != len(counts):
            raise ValueError(f"{len(starts)} {self.start_image} tokens in the prompt for {len(counts)} pages")
        for start, count in zip(starts, counts, strict=True):
            run = ids[start : start + count + 1]
            if run[:-1] != [self.image_token_id] * count or run[-1] != end_id:
                raise ValueError(f"page at position {start}: expected {count} image tokens then {self.end_image}")
        return starts
