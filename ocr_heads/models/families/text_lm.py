"""Text-only language models (:mod:`ocr_heads.models.text_lm`): Qwen2-Instruct (``qwen2``), Llama-layout models
(``llama``, which InternLM2 becomes once converted) and InternLM2 / InternLM2.5 remote-code checkpoints
(``internlm2``, converted once by :mod:`ocr_heads.models.internlm2_convert`). No page settings: they read no pages."""

from __future__ import annotations

from ocr_heads.models.families import Family

FAMILIES = (
    Family("qwen2", "ocr_heads.models.text_lm:TextLMAdapter", text_only=True),
    Family("llama", "ocr_heads.models.text_lm:TextLMAdapter", text_only=True),
    Family("internlm2", "ocr_heads.models.internlm2_convert:load_internlm2", text_only=True),
)
