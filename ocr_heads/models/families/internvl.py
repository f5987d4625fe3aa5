"""InternVL: native checkpoints (:mod:`ocr_heads.models.internvl`) and InternVL2 remote-code ones, converted once
and then loaded natively (:mod:`ocr_heads.models.internvl2_convert`): the same knobs."""

from __future__ import annotations

from ocr_heads.models.families import Family, Knob

KNOBS = (Knob("max_patches", int, "override the protocol's most 448 px tiles per page (a thumbnail is added "
              "when a page gets more than one)"),)

FAMILIES = (
    Family("internvl", "ocr_heads.models.internvl:InternVLAdapter", KNOBS),
    Family("internvl_chat", "ocr_heads.models.internvl2_convert:load_internvl2", KNOBS),
)
