"""Qwen2-VL and the later Qwen families (:mod:`ocr_heads.models.qwen2_vl`, :mod:`ocr_heads.models.qwen_family`)."""

from __future__ import annotations

from ocr_heads.models.families import Family, Knob

KNOBS = (Knob("min_pixels", int, "override the protocol's min pixels of a resized page"),
         Knob("max_pixels", int, "override the protocol's max pixels of a resized page"))

FAMILIES = (
    Family("qwen2_vl", "ocr_heads.models.qwen2_vl:Qwen2VLAdapter", KNOBS),
    Family("qwen2_5_vl", "ocr_heads.models.qwen_family:Qwen2_5_VLAdapter", KNOBS),
    Family("qwen3_vl", "ocr_heads.models.qwen_family:Qwen3VLAdapter", KNOBS),
    Family("qwen3_vl_moe", "ocr_heads.models.qwen_family:Qwen3VLMoeAdapter", KNOBS),
    Family("qwen3_5", "ocr_heads.models.qwen_family:Qwen3_5Adapter", KNOBS),
)
