"""Text-only causal language models (Qwen2-Instruct, InternLM2.5-chat converted to Llama): the base LLMs whose
retrieval heads the paper sets beside the OCR heads of the vision-language models built on them.

They read a sample's context as plain text (``step2_text_retrieval_head.py``); they have no image input, so
every page-reading path refuses them with one clear message. The prompt is the checkpoint's own chat template
with one user turn of plain text (Qwen2's and InternLM2's templates read ``content`` as a string).
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import AutoModelForCausalLM

from ocr_heads.core.errors import UserError
from ocr_heads.models.base import AttentionShape, ModelAdapter, ModelInputs
from ocr_heads.models.protocol import check_protocol, resolve_protocol

# Qwen2-Instruct's ChatML, used only when a checkpoint ships no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TextOnlyModel(UserError):
    """A page-reading step asked of a language model without a vision tower."""


class TextLMAdapter(ModelAdapter):
    """A causal LM whose config is flat (no ``text_config``) and whose decoder layers sit at ``model.model.layers``."""

    model_class = AutoModelForCausalLM
    chat_template = CHATML_TEMPLATE
    family = "text-only LM"
    image_token = ""
    reads_images = False

    def __init__(self, model_id: str, dtype: torch.dtype | str | None = None, device_map: str | None = None,
                 protocol: str | None = None, weights: bool = True, **knobs: int | bool | None) -> None:
        # The base constructor checks an image token against the config; a text model has neither.
        if protocol is not None:
            check_protocol(protocol)
        self.knobs = self.check_knobs(knobs)
        self._load(model_id, dtype, device_map, weights)
        # Pages never reach this model; the protocol is kept only so run identities read alike across families.
        self.protocol, self.protocol_source = resolve_protocol(protocol, self.config)
        self.image_token_id = None
        self.family = f"{self.config.model_type} (text only)"

    def setup(self, model_id: str) -> None:
        """Nothing to set up: no image processor, no token geometry."""

    def settings(self) -> dict:
        return {"protocol": self.protocol, "modality": "text only"}

    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        raise self._no_pages()

    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        raise self._no_pages()

    def _no_pages(self) -> TextOnlyModel:
        return TextOnlyModel(f"{self.name} is a text-only language model ({self.config.model_type}): it reads no "
                             "pages (score it with step2_text_retrieval_head.py; experiments take its text datasets: "
                             "nq, hotpot, passkey_text)")

    @property
    def shape(self) -> AttentionShape:
        text = self.config.get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return AttentionShape(text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads, head_dim)

    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        if image_token_counts or any(part["type"] != "text" for part in content):
            raise self._no_pages()
        text = "".join(part["text"] for part in content)
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                    add_generation_prompt=True)
        # The template writes any begin-of-sequence token itself (InternLM2's {{ bos_token }}): add none here.
        input_ids, offsets = self.encode_prompt(prompt, context)
        return ModelInputs(tensors={"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)},
                           context_offsets=offsets)

    def set_text_attention(self, implementation: str) -> None:
        self.model.set_attn_implementation(implementation)

    def attention_modules(self) -> list[torch.nn.Module | None]:
        return [getattr(layer, "self_attn", None) for layer in self.model.model.layers]
