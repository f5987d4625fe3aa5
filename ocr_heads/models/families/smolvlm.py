"""SmolVLM and SmolVLM (v1) checkpoints, which are ``idefics3`` (:mod:`ocr_heads.models.smolvlm`)."""

from __future__ import annotations

from ocr_heads.models.families import Family, Knob

KNOBS = (Knob("image_splitting", bool, "also cut the page into 512 px tiles before the global image, 64 tokens "
              "each (default: off under --protocol paper, the checkpoint's do_image_splitting under native)"),)

FAMILIES = (
    Family("smolvlm", "ocr_heads.models.smolvlm:SmolVLMAdapter", KNOBS),
    Family("idefics3", "ocr_heads.models.smolvlm:Idefics3Adapter", KNOBS),
)
