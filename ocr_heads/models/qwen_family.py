"""The later Qwen families: Qwen2.5-VL, Qwen3-VL (dense and MoE) and the hybrid Qwen3.5.

All of them keep Qwen2-VL's input layout (``<|vision_start|>`` + ``<|image_pad|>`` x tokens +
``<|vision_end|>``, M-RoPE positions from ``mm_token_type_ids`` and ``image_grid_thw``) and its image
processor (``Qwen2VLImageProcessor``: smart resize, patches merged 2x2 into one LLM token), so each
adapter is :class:`~ocr_heads.models.qwen2_vl.Qwen2VLAdapter` with another model class and chat
template. What differs is read from the checkpoint, never assumed:

- Qwen2.5-VL: 14 px patches -> 28 px per token; window attention lives in the vision tower only.
- Qwen3-VL: 16 px patches -> 32 px per token; DeepStack adds features of intermediate vision layers
  to the hidden states of the image tokens after the first decoder layers (see docs/qwen_families.md
  for what that means when reading scores). Attention is ordinary softmax attention in every layer.
- Qwen3.5: 16 px patches; 3 of every 4 decoder layers are Gated DeltaNet (linear attention, no
  attention probabilities). Those layers have no ``self_attn`` and are reported as not scoreable.
"""

from __future__ import annotations

from transformers import (
    Qwen2_5_VLForConditionalGeneration,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
    Qwen3VLMoeForConditionalGeneration,
)

from ocr_heads.models.qwen2_vl import QWEN2_VL_CHAT_TEMPLATE, Qwen2VLAdapter

# Chat formats for a user turn of images and text, written from the published templates (checkpoints that
# ship their own template use theirs). Qwen3-VL's user turn is Qwen2-VL's; Qwen2.5-VL opens with a default
# system turn.
QWEN3_VL_CHAT_TEMPLATE = QWEN2_VL_CHAT_TEMPLATE
QWEN2_5_VL_CHAT_TEMPLATE = QWEN2_VL_CHAT_TEMPLATE.replace(
    "{% for message in messages %}",
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}",
    1,
)
# Qwen3.5 thinks by default; with enable_thinking=false the assistant turn opens with an empty think block.
QWEN3_5_CHAT_TEMPLATE = QWEN3_VL_CHAT_TEMPLATE.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}",
)


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    model_class = Qwen2_5_VLForConditionalGeneration
    chat_template = QWEN2_5_VL_CHAT_TEMPLATE
    family = "Qwen2.5-VL"


class Qwen3VLAdapter(Qwen2VLAdapter):
    model_class = Qwen3VLForConditionalGeneration
    chat_template = QWEN3_VL_CHAT_TEMPLATE
    family = "Qwen3-VL"


class Qwen3VLMoeAdapter(Qwen3VLAdapter):
    """Qwen3-VL-MoE: the same inputs and attention; the experts replace the decoder MLPs only."""

    model_class = Qwen3VLMoeForConditionalGeneration
    family = "Qwen3-VL-MoE"


class Qwen3_5Adapter(Qwen2VLAdapter):
    """Qwen3.5 (hybrid): scoring reads the full-attention layers; the linear-attention ones are not scoreable
    (``scoreable_layers`` comes from the layers that have a ``self_attn``)."""

    model_class = Qwen3_5ForConditionalGeneration
    chat_template = QWEN3_5_CHAT_TEMPLATE
    # Answer directly, as the other families do: a thinking preamble would push the answer past max_new_tokens.
    chat_template_kwargs = {"enable_thinking": False}
    family = "Qwen3.5"
