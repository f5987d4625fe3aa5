"""Gemma 3 adapter (``Gemma3ForConditionalGeneration``): all Gemma 3 knowledge lives here.

The image processor stretches a page to one ``896 x 896`` image (SigLIP, 14 px patches: 64 x 64);
the projector average-pools 4 x 4 patches, so a page is ``mm_tokens_per_image`` (256) LLM tokens,
a row-major 16 x 16 grid, each covering 1/16 of the page's width and height. With pan-and-scan on,
the processor adds crops of the page (each also stretched to 896 px) after the whole page; each
crop is a further run of 256 tokens. Where the crops lie is read from the processor's own
``pan_and_scan`` applied to a grid of pixel coordinates, never recomputed.

Each image placeholder (``<start_of_image>`` in the chat template) is expanded as
``Gemma3Processor`` does: ``"\\n\\n<start_of_image>" + <image_soft_token> x 256 + "<end_of_image>\\n\\n"``
(with pan-and-scan: the original, then "and here are some crops..." and one such run per crop).
``token_type_ids`` (1 on image tokens) always accompanies the ids: the model lets the tokens of one
image attend to each other bidirectionally in prefill, and without it silently runs causally.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, Gemma3ForConditionalGeneration
from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

from ocr_heads.models.base import (
    ImageTokens,
    ModelAdapter,
    ModelInputs,
    expand_placeholders,
    region_token_boxes,
)
from ocr_heads.models.families import gemma3 as declaration

BOI = "<start_of_image>"
EOI = "<end_of_image>"
IMAGE_TOKEN = "<image_soft_token>"
# Gemma 3's chat format (user/model turns; images as <start_of_image>): used when a checkpoint ships no chat
# template, and by the project's own tiny tokenizer.
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def image_regions(image_processor, page_size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
    """Page regions ``(x0, y0, x1, y1)`` the processor turns into images: the page, then its pan-and-scan crops.

    The crops come from the processor's own ``pan_and_scan`` run on a 2-channel image of (row, column) indices.
    """
    width, height = page_size
    regions = [(0.0, 0.0, float(width), float(height))]
    if image_processor.do_pan_and_scan:
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        crops = image_processor.pan_and_scan(
            image=np.stack([rows, cols]), pan_and_scan_min_crop_size=image_processor.pan_and_scan_min_crop_size,
            pan_and_scan_max_num_crops=image_processor.pan_and_scan_max_num_crops,
            pan_and_scan_min_ratio_to_activate=image_processor.pan_and_scan_min_ratio_to_activate)
        regions += [(float(c[1, 0, 0]), float(c[0, 0, 0]), float(c[1, 0, -1] + 1), float(c[0, -1, 0] + 1))
                    for c in crops]
    return regions


def pan_and_scan_crops(page_size: tuple[int, int], min_crop_size: int, max_crops: int, min_ratio: float) -> int:
    """How many pan-and-scan crops a page gets (0: none), by the rule Gemma 3's processor states: crops along the
    long side, about one per aspect-ratio unit, 2 .. ``max_crops``, none below ``min_ratio`` or ``min_crop_size``."""
    long, short = max(page_size), min(page_size)
    if long / short < min_ratio:
        return 0
    crops = min(max(2, min(math.floor(long / short + 0.5), math.floor(long / min_crop_size))), max_crops)
    return crops if min(math.ceil(long / crops), short) >= min_crop_size else 0


class Gemma3Adapter(ModelAdapter):
    CONFIG_TOKENS = {"image_token_index": IMAGE_TOKEN, "boi_token_index": BOI, "eoi_token_index": EOI,
                     "image_token_id": IMAGE_TOKEN}  # hub files use *_index
    KNOBS = declaration.KNOBS  # declared once, torch-free, where the registry reads it

    family = "Gemma 3"
    model_class = Gemma3ForConditionalGeneration
    chat_template = GEMMA3_CHAT_TEMPLATE
    image_token = IMAGE_TOKEN

    def setup(self, model_id: str) -> None:
        self.image_processor = AutoImageProcessor.from_pretrained(model_id)
        # Published preprocessor configs leave the pan-and-scan settings null: Gemma3Processor supplies them at call
        # time, and this adapter calls the image processor alone, so it takes them from the processor class too.
        for key, value in Gemma3Processor.images_kwargs.items():
            if getattr(self.image_processor, key, None) is None:
                setattr(self.image_processor, key, value)
        # `paper`: one 896 px square, 256 tokens a page (the paper's budget; no crops, like its one InternVL
        # tile). `native`: the checkpoint's own do_pan_and_scan (published Gemma 3 configs leave it off).
        self.image_processor.do_pan_and_scan = self.knob_or_protocol(
            "pan_and_scan", False, bool(self.image_processor.do_pan_and_scan))
        config = self.config
        self.tokens_per_image = int(config.mm_tokens_per_image)
        self.side = int(round(self.tokens_per_image**0.5))
        patches = config.vision_config.image_size // config.vision_config.patch_size
        if self.side**2 != self.tokens_per_image or patches % self.side:
            raise ValueError(f"{model_id}: {self.tokens_per_image} tokens per image do not pool {patches}x{patches} "
                             "patches into a square grid")

    def settings(self) -> dict:
        processor = self.image_processor
        settings = {"protocol": self.protocol, "tokens_per_image": self.tokens_per_image,
                    "pan_and_scan": bool(processor.do_pan_and_scan)}
        if processor.do_pan_and_scan:
            settings.update(min_crop_size=processor.pan_and_scan_min_crop_size,
                            max_num_crops=processor.pan_and_scan_max_num_crops,
                            min_ratio_to_activate=processor.pan_and_scan_min_ratio_to_activate)
        return settings

    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        settings = self.settings()
        crops = 0
        if settings["pan_and_scan"]:
            crops = pan_and_scan_crops(page_size, settings["min_crop_size"], settings["max_num_crops"],
                                       settings["min_ratio_to_activate"])
        return self.tokens_per_image * (1 + crops)

    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        if not pages:
            raise ValueError("image_inputs needs at least one page")
        pages = [page.convert("RGB") for page in pages]
        vision = self.image_processor(images=pages, return_tensors="pt")
        regions = [image_regions(self.image_processor, page.size) for page in pages]
        crops = [int(n) for n in vision["num_crops"]]
        if crops != [len(r) - 1 for r in regions]:
            raise ValueError(f"image processor made {crops} crops per page, pan_and_scan predicts "
                             f"{[len(r) - 1 for r in regions]}")
        content = [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]
        inputs = self._tokenize(content, context=None, image_token_counts=crops)
        inputs.tensors["pixel_values"] = vision["pixel_values"]
        starts = self._run_starts(inputs.input_ids[0], sum(len(r) for r in regions))
        runs = iter(starts)
        inputs.image_tokens = [ImageTokens(page=i, start=next(runs), tile_boxes=region_token_boxes(region, self.side),
                                           layout=self._layout(region, k))
                               for i, page_regions in enumerate(regions) for k, region in enumerate(page_regions)]
        return inputs

    def _layout(self, region: tuple[float, float, float, float], index: int) -> str:
        size = self.config.vision_config.image_size
        if index == 0:
            return f"{self.side} x {self.side} tokens over the page stretched to {size} px"
        x0, y0, x1, y1 = (int(v) for v in region)
        return f"crop {index}: {self.side} x {self.side} tokens over page x {x0}..{x1}, y {y0}..{y1}"

    def _image_sequence(self, crops: int) -> str:
        """One page's text as Gemma3Processor expands it (the page, then its pan-and-scan crops)."""
        one = f"\n\n{BOI}{IMAGE_TOKEN * self.tokens_per_image}{EOI}\n\n"
        if not crops:
            return one
        return f"Here is the original image {one} and here are some crops to help you see better " + " ".join(
            [one] * crops)

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        """``image_token_counts`` here: the number of pan-and-scan crops of every page."""
        prompt = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
        prompt = expand_placeholders(prompt, BOI, [self._image_sequence(crops) for crops in image_token_counts])
        # The template already starts with <bos>.
        input_ids, offsets = self.encode_prompt(prompt, context)
        tensors = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            # 1 on image tokens: the model's bidirectional attention within each image needs it.
            "token_type_ids": (input_ids == self.image_token_id).long(),
        }
        return ModelInputs(tensors=tensors, context_offsets=offsets)

    def _run_starts(self, input_ids: torch.Tensor, runs: int) -> list[int]:
        """Start of every run of ``tokens_per_image`` image tokens (one per page and per crop), checked."""
        is_image = (input_ids == self.image_token_id).int()
        starts = (torch.diff(is_image, prepend=torch.zeros(1, dtype=is_image.dtype)) == 1).nonzero().flatten().tolist()
        if len(starts) != runs or int(is_image.sum()) != runs * self.tokens_per_image:
            raise ValueError(f"expected {runs} runs of {self.tokens_per_image} image tokens, found {len(starts)} runs "
                             f"and {int(is_image.sum())} tokens")
        for start in starts:
            if int(is_image[start : start + self.tokens_per_image].sum()) != self.tokens_per_image:
                raise ValueError(f"the image-token run at {start} is shorter than {self.tokens_per_image}")
        return starts
