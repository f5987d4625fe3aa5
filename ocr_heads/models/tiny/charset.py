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


def build_byte_level_char_tokenizer(tokenizer_class: type, special_tokens: list[str], chat_template: str):
    """A family's own byte-level BPE tokenizer class with one token per byte and no merges.

    For families whose ``AutoTokenizer`` always rebuilds a byte-level BPE from ``tokenizer.json``
    (Qwen3.5's ``Qwen3_5Tokenizer``): the vocabulary is the special tokens plus the 256 byte symbols, so
    ASCII text is one token per character (as with :func:`build_char_tokenizer`) and nothing is unknown.
    ``special_tokens`` must hold ``<|endoftext|>`` (pad) and ``<|im_end|>`` (eos).
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = list(special_tokens)
    vocab = {token: i for i, token in enumerate(specials + list(bytes_to_unicode().values()))}
    tokenizer = tokenizer_class(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                unk_token=None)
    tokenizer.add_special_tokens({"additional_special_tokens": [t for t in specials
                                                                if t not in ("<|im_end|>", "<|endoftext|>")]})
    tokenizer.chat_template = chat_template
    return tokenizer
