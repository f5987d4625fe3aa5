"""Gemma 3 (:mod:`ocr_heads.models.gemma3`)."""

from __future__ import annotations

from ocr_heads.models.families import Family, Knob

KNOBS = (Knob("pan_and_scan", bool, "also cut a wide or tall page into crops after the whole page, 256 tokens "
              "each (default: off under --protocol paper, the checkpoint's do_pan_and_scan under native)"),)

FAMILIES = (Family("gemma3", "ocr_heads.models.gemma3:Gemma3Adapter", KNOBS),)
