"""LLaVA-OneVision (:mod:`ocr_heads.models.llava_onevision`): no page settings beyond the protocol."""

from __future__ import annotations

from ocr_heads.models.families import Family

FAMILIES = (Family("llava_onevision", "ocr_heads.models.llava_onevision:LlavaOnevisionAdapter"),)
