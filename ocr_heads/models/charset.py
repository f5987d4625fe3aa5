"""A character-level tokenizer in a model family's format, built locally (no hub).

Every printable ASCII character is one token, so digits and letters are single tokens and
decoded text aligns to characters trivially. Special tokens and the chat template follow
Qwen2-VL by default (or whatever family the caller names), so the adapter treats this
tokenizer exactly like the real one.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ocr_heads.models.qwen2_vl import QWEN2_VL_CHAT_TEMPLATE

UNK = "<|unk|>"
# Qwen2-VL's special tokens (names as in the real tokenizer); ids are ours.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    UNK,
]
CHARACTERS = [c for c in string.printable if c not in "\t\r\x0b\x0c"]  # keeps " " and "\n"


def build_char_tokenizer(
    special_tokens: list[str] | None = None,
    chat_template: str = QWEN2_VL_CHAT_TEMPLATE,
    named_tokens: dict[str, str] | None = None,
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|endoftext|>",
    bos_token: str | None = None,
) -> PreTrainedTokenizerFast:
    """``special_tokens`` must hold the pad and eos tokens (Qwen's names by default); the unknown token is added.

    ``named_tokens`` become tokenizer attributes (e.g. ``start_image_token``), as a family's processor expects.
    """
    specials = list(special_tokens or SPECIAL_TOKENS)
    if UNK not in specials:
        specials.append(UNK)
    vocab = {token: i for i, token in enumerate(specials + CHARACTERS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Isolate every character, newlines included ("." would glue "\n\n" into one unknown token);
    # special tokens are matched before this.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        unk_token=UNK,
        eos_token=eos_token,
        pad_token=pad_token,
        bos_token=bos_token,
        extra_special_tokens=named_tokens or [t for t in specials if t not in (UNK, eos_token, pad_token, bos_token)],
        clean_up_tokenization_spaces=False,
    )
    if named_tokens:
        # Named tokens replace the list above; the other specials must stay unsplittable all the same.
        tokenizer.add_special_tokens({"extra_special_tokens": [t for t in specials if t not in (UNK, eos_token,
                                      pad_token, bos_token)]}, replace_extra_special_tokens=False)
    tokenizer.chat_template = chat_template
    return tokenizer
