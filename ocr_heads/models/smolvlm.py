"""SmolVLM / Idefics3 adapter (``SmolVLMForConditionalGeneration``, ``Idefics3ForConditionalGeneration``).

All SmolVLM knowledge lives here. How the image processor and the model turn a page into tokens
(transformers 5.x; the PIL and the torchvision processors share the geometry):

* With image splitting (the published setting) the page is resized so that its longest edge is
  ``size["longest_edge"]`` (2048: small pages are upscaled), then stretched so that both sides are
  multiples of the tile ``max_image_size["longest_edge"]`` (512), and cut into ``rows x cols``
  square tiles, row-major; a "global" image (the whole page stretched to one tile) follows them.
  Both resizes stretch the whole page, so crop ``(i, j)`` shows exactly the page region
  ``[j W/cols, i H/rows, (j+1) W/cols, (i+1) H/rows]``. A page that fits one tile gets only the
  global image.
* Without splitting the page is stretched to one tile: the global image alone.
* Every tile is ``(tile/patch)^2`` SigLIP patches; the connector's pixel shuffle merges
  ``scale_factor x scale_factor`` patches into one LLM token, row-major: ``g x g`` tokens
  (g = tile / patch / scale_factor; 512/16/4 = 8, 64 tokens), each covering 1/g of its region.

The prompt text of a page is the processor's own (``get_image_prompt_string``): per tile
``<fake_token_around_image><row_i_col_j>`` + ``<image>`` x g^2, a newline after each row, then
``\\n<fake_token_around_image><global-img>`` + ``<image>`` x g^2 + ``<fake_token_around_image>``.
Only ``<image>`` positions are image tokens, one run per tile. Every tile is a full tile: the
processor pads frames only to the largest frame of the batch and all frames are tile x tile, so
``pixel_attention_mask`` is all ones (checked on every call; a padded frame is refused, never mapped).
Inputs are composed from ``AutoImageProcessor`` + ``AutoTokenizer`` (SmolVLM's processor class builds a
torchvision-only video processor).
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from transformers import AutoImageProcessor, Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE, get_image_prompt_string

from ocr_heads.models.base import (
    ImageTokens,
    ModelAdapter,
    ModelInputs,
    contiguous_runs,
    expand_placeholders,
    region_token_boxes,
)
from ocr_heads.models.families import smolvlm as declaration

IMAGE_TOKEN = "<image>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
END_OF_UTTERANCE = "<end_of_utterance>"
# transformers' SmolVLM template: for image and text parts it renders as the chat_template.json published with
# HuggingFaceTB/SmolVLM-256M-Instruct ("<|im_start|>User:<image>...<end_of_utterance>\nAssistant:"). Used when a
# checkpoint ships none, and by the project's tiny tokenizer.
SMOLVLM_CHAT_TEMPLATE = DEFAULT_CHAT_TEMPLATE
# transformers' image processors never resize past this (MAX_IMAGE_SIZE in image_processing_smolvlm).
MAX_IMAGE_SIZE = 4096
Region = tuple[float, float, float, float]


def _fit_longest_edge(width: int, height: int, longest: int) -> tuple[int, int]:
    """Stage 1 of the processor: the longest edge becomes ``longest``, the other keeps the aspect (truncated, then
    made even), then both are capped at MAX_IMAGE_SIZE."""
    aspect = width / height
    if width >= height:
        width, height = longest, int(longest / aspect)
        height += height % 2
    else:
        width, height = int(longest * aspect), longest
        width += width % 2
    width, height = max(width, 1), max(height, 1)
    if max(width, height) > MAX_IMAGE_SIZE:
        aspect = width / height
        width, height = (MAX_IMAGE_SIZE, int(MAX_IMAGE_SIZE / aspect)) if width >= height \
            else (int(MAX_IMAGE_SIZE * aspect), MAX_IMAGE_SIZE)
    return max(width, 1), max(height, 1)


def tile_grid(page_size: tuple[int, int], tile: int, longest_edge: int | None) -> tuple[int, int]:
    """(rows, cols) of the crops the processor cuts a ``(width, height)`` page into; (0, 0) when it makes none.

    The processor's rule, as plain arithmetic: resize to ``longest_edge`` (None: no resize), round both sides up
    to multiples of ``tile`` (the short side from the rounded long side and the aspect), split when larger than
    one tile.
    """
    width, height = page_size
    if longest_edge is not None:
        width, height = _fit_longest_edge(width, height, longest_edge)
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    if width > tile or height > tile:
        return height // tile, width // tile
    return 0, 0


def page_regions(page_size: tuple[int, int], rows: int, cols: int) -> list[Region]:
    """Page regions of a page's frames in processor order: crops row-major, then the global image (whole page).
    ``rows = cols = 0`` (no crops): the global image alone."""
    width, height = page_size
    crops = [(c * width / cols, r * height / rows, (c + 1) * width / cols, (r + 1) * height / rows)
             for r in range(rows) for c in range(cols)]
    return [*crops, (0.0, 0.0, float(width), float(height))]


class SmolVLMAdapter(ModelAdapter):
    family = "SmolVLM"
    model_class: type = SmolVLMForConditionalGeneration
    chat_template = SMOLVLM_CHAT_TEMPLATE
    image_token = IMAGE_TOKEN
    CONFIG_TOKENS = {"image_token_id": IMAGE_TOKEN}
    KNOBS = declaration.KNOBS  # declared once, torch-free, where the registry reads it

    def setup(self, model_id: str) -> None:
        self.image_processor = AutoImageProcessor.from_pretrained(model_id)
        # `paper`: one tile a page (the global image alone, no splitting), as the paper gives InternVL one tile.
        # `native`: the checkpoint's own do_image_splitting (published SmolVLM configs split).
        self.image_splitting = self.knob_or_protocol("image_splitting", False,
                                                     bool(self.image_processor.do_image_splitting))
        config = self.config
        vision = config.vision_config
        self.tile = int(vision.image_size)
        self.patch = int(vision.patch_size)
        self.scale = int(config.scale_factor)
        patches = self.tile // self.patch
        if patches * self.patch != self.tile or patches % self.scale:
            raise ValueError(f"{model_id}: a {self.tile} px tile of {self.patch} px patches does not pixel-shuffle "
                             f"by {self.scale} into a whole grid")
        self.grid = patches // self.scale
        self.tokens_per_image = self.grid**2
        processor_tile = self.image_processor.max_image_size["longest_edge"]
        if processor_tile != self.tile:
            raise ValueError(f"{model_id}: image processor tiles of {processor_tile} px do not match the vision "
                             f"tower's {self.tile}")
        self.fake_image_token = getattr(self.tokenizer, "fake_image_token", None) or FAKE_IMAGE_TOKEN
        self.global_image_token = getattr(self.tokenizer, "global_image_token", None) or GLOBAL_IMAGE_TOKEN

    def attention_modules(self) -> list[torch.nn.Module | None]:
        # SmolVLM / Idefics3 keep the language model at model.text_model (not model.language_model).
        return [getattr(layer, "self_attn", None) for layer in self.model.model.text_model.layers]

    @property
    def longest_edge(self) -> int | None:
        """The processor's first resize (longest edge), or None when it does not resize."""
        processor = self.image_processor
        return int(processor.size["longest_edge"]) if processor.do_resize else None

    def settings(self) -> dict:
        settings = {"protocol": self.protocol, "image_splitting": self.image_splitting, "tile": self.tile,
                    "tokens_per_image": self.tokens_per_image}
        if self.image_splitting:
            settings["longest_edge"] = self.longest_edge
        return settings

    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        if not self.image_splitting:
            return self.tokens_per_image
        rows, cols = tile_grid(page_size, self.tile, self.longest_edge)
        return self.tokens_per_image * (rows * cols + 1)

    # -- inputs -------------------------------------------------------------------------------------

    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        if not pages:
            raise ValueError("image_inputs needs at least one page")
        pages = [page.convert("RGB") for page in pages]
        # One sample holding all pages, as the processor batches a prompt's images.
        vision = self.image_processor(images=[pages], do_image_splitting=self.image_splitting,
                                      return_row_col_info=True, return_tensors="pt")
        grids = list(zip(vision["rows"][0], vision["cols"][0], strict=True))
        regions = [page_regions(page.size, rows, cols) for page, (rows, cols) in zip(pages, grids, strict=True)]
        pixel_values = vision["pixel_values"][0]
        self._check_frames(pixel_values, vision.get("pixel_attention_mask"), sum(map(len, regions)))
        prompts = [get_image_prompt_string(rows, cols, self.tokens_per_image, self.fake_image_token, IMAGE_TOKEN,
                                           self.global_image_token) for rows, cols in grids]
        content = [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]
        inputs = self._tokenize(content, context=None, image_token_counts=[], page_prompts=prompts)
        # One frame per row, (frames, 1, C, H, W): the model flattens (batch, images) anyway, and this shape lets
        # collate concatenate prompts with different frame counts. No mask needed: every frame is a full tile.
        inputs.tensors["pixel_values"] = pixel_values[:, None]
        frames = [(i, k, region) for i, page_regions_ in enumerate(regions) for k, region in enumerate(page_regions_)]
        starts = contiguous_runs(inputs.input_ids[0], self.image_token_id, [self.tokens_per_image] * len(frames))
        inputs.image_tokens = [
            ImageTokens(page=i, start=start, tile_boxes=region_token_boxes(region, self.grid),
                        layout=self._layout(region, k, grids[i]))
            for start, (i, k, region) in zip(starts, frames, strict=True)
        ]
        return inputs

    def _check_frames(self, pixel_values: torch.Tensor, mask: torch.Tensor | None, expected: int) -> None:
        """Every frame the processor made is a full tile (no padded pixels) and there is one per region."""
        if pixel_values.shape[0] != expected:
            raise ValueError(f"image processor made {pixel_values.shape[0]} frames, the tile grids predict {expected}")
        if tuple(pixel_values.shape[-2:]) != (self.tile, self.tile):
            raise ValueError(f"image processor frames of {tuple(pixel_values.shape[-2:])} px, expected "
                             f"{self.tile} x {self.tile} tiles")
        if mask is not None and not bool(mask.all()):
            raise ValueError("image processor padded a frame (pixel_attention_mask has zeros): padded pixels show "
                             "no page, and this adapter maps full tiles only")

    def _layout(self, region: Region, index: int, grid: tuple[int, int]) -> str:
        """For people (inspect, doctor): the crop grid on a page's first run, the global image on its last; the other
        crops say nothing more (their boxes do)."""
        rows, cols = grid
        g = f"{self.grid} x {self.grid} tokens"
        if index == rows * cols:
            return f"{'then ' if rows else ''}{g} over the page stretched to {self.tile} px (global image)"
        if index:
            return ""
        x0, y0, x1, y1 = region
        return (f"{rows} x {cols} tiles (rows x cols, row-major) of {self.tile} px, {g} each, over page cells of "
                f"{x1 - x0:.1f} x {y1 - y0:.1f} px")

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int],
                  page_prompts: list[str] | None = None) -> ModelInputs:
        """``page_prompts``: each page's expanded text (tiles, row newlines, global image); none for text prompts."""
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        prompt = expand_placeholders(prompt, IMAGE_TOKEN, page_prompts or [])
        # The template starts with <|im_start|> itself.
        input_ids, offsets = self.encode_prompt(prompt, context)
        tensors = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        return ModelInputs(tensors=tensors, context_offsets=offsets)


class Idefics3Adapter(SmolVLMAdapter):
    """SmolVLM (v1) checkpoints such as HuggingFaceTB/SmolVLM-256M-Instruct are ``idefics3``: same processor
    geometry, prompt layout and module layout, Idefics3 classes."""

    model_class = Idefics3ForConditionalGeneration
