"""The real Qwen2 / Qwen2-VL vocabulary, built offline from the BPE ranks a PyPI package ships.

Qwen2 and Qwen2-VL tokenize with 151,643 byte-level BPE ranks (the ``qwen.tiktoken`` file of the
Qwen models) plus special tokens from id 151,643 on. The Apache-2.0 package ``dashscope`` ships
those ranks as ``dashscope/resources/qwen.tiktoken``. We fetch its wheel the way pip does (a
package registry, not the model hub), read that one file from the zip without installing the
package, convert it with transformers' tiktoken converter and Qwen2's pre-tokenizer pattern, add
the special tokens at their published ids and cache the result::

    from ocr_heads.models.tiny.qwen2_vocab import qwen2_tokenizer_dir
    tokenizer = AutoTokenizer.from_pretrained(qwen2_tokenizer_dir())

The cache lives under ``$OCR_HEADS_CACHE/qwen2-tokenizer`` (default ``~/.cache/ocr_heads``);
``$OCR_HEADS_QWEN_TIKTOKEN`` may name a local ``qwen.tiktoken`` to skip the download. When the
ranks cannot be had, :class:`VocabUnavailable` says why (tests turn it into a skip).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tokenizers import AddedToken, normalizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from ocr_heads.core.errors import UserError

logger = logging.getLogger(__name__)

DASHSCOPE_VERSION = "2.0.2"
TIKTOKEN_MEMBER = "dashscope/resources/qwen.tiktoken"
NUM_RANKS = 151643
# Qwen2-VL's added tokens as published in its tokenizer_config.json (added_tokens_decoder), in id order
# from NUM_RANKS on.
SPECIAL_TOKENS = (
    "<|endoftext|>",  # 151643
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645
    "<|object_ref_start|>",  # 151646
    "<|object_ref_end|>",  # 151647
    "<|box_start|>",  # 151648
    "<|box_end|>",  # 151649
    "<|quad_start|>",  # 151650
    "<|quad_end|>",  # 151651
    "<|vision_start|>",  # 151652
    "<|vision_end|>",  # 151653
    "<|vision_pad|>",  # 151654
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
)
SPECIAL_TOKEN_IDS = {token: NUM_RANKS + i for i, token in enumerate(SPECIAL_TOKENS)}
# The text-only Qwen2 / Qwen2-Instruct tokenizers publish only these, at the same ids.
TEXT_SPECIAL_TOKENS = SPECIAL_TOKENS[:3]
# Bumped when the conversion changes, so that stale caches are rebuilt.
FORMAT = 1
DONE_MARKER = "ocr_heads_qwen2_vocab.json"


class VocabUnavailable(UserError):
    """The Qwen2 BPE ranks cannot be had here (no network to PyPI, no cached copy)."""


def cache_dir() -> Path:
    return Path(os.environ.get("OCR_HEADS_CACHE", Path.home() / ".cache" / "ocr_heads")) / "qwen2-tokenizer"


def read_ranks(path: Path) -> dict[bytes, int]:
    """``qwen.tiktoken``: one ``base64(token) rank`` per line (what tiktoken's loader reads)."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if len(ranks) != NUM_RANKS or sorted(ranks.values()) != list(range(NUM_RANKS)):
        raise VocabUnavailable(f"{path}: expected ranks 0..{NUM_RANKS - 1}, found {len(ranks)} entries")
    return ranks


class _Converter(TikTokenConverter):
    """transformers' tiktoken converter, reading the ranks without the ``tiktoken`` package."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return read_ranks(Path(tiktoken_url))


def download_ranks(target: Path) -> Path:
    """Fetch the dashscope wheel with pip (no install) and copy its ``qwen.tiktoken`` to ``target``."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--quiet", "--timeout", "20", "--retries", "1", f"dashscope=={DASHSCOPE_VERSION}", "-d", tmp]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            raise VocabUnavailable(f"the Qwen2 vocabulary cannot be had: pip could not fetch "
                                   f"dashscope=={DASHSCOPE_VERSION} ({detail.strip().splitlines()[-1:]})") from err
        wheels = list(Path(tmp).glob("dashscope-*.whl"))
        if not wheels:
            raise VocabUnavailable("the Qwen2 vocabulary cannot be had: pip downloaded no dashscope wheel")
        with zipfile.ZipFile(wheels[0]) as wheel:
            if TIKTOKEN_MEMBER not in wheel.namelist():
                raise VocabUnavailable(f"the Qwen2 vocabulary cannot be had: {wheels[0].name} has no {TIKTOKEN_MEMBER}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(wheel.read(TIKTOKEN_MEMBER))
    return target


def ranks_file(cache: Path | None = None) -> Path:
    """A local ``qwen.tiktoken``: ``$OCR_HEADS_QWEN_TIKTOKEN``, the cached copy, or a fresh download."""
    override = os.environ.get("OCR_HEADS_QWEN_TIKTOKEN")
    if override:
        if not Path(override).is_file():
            raise VocabUnavailable(f"OCR_HEADS_QWEN_TIKTOKEN={override} is not a file")
        return Path(override)
    target = (cache or cache_dir()) / "qwen.tiktoken"
    if target.is_file():
        return target
    logger.info("fetching the Qwen2 BPE ranks from PyPI (dashscope==%s, read from the wheel, not installed)",
                DASHSCOPE_VERSION)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")  # concurrent sessions never share one
    download_ranks(partial)
    partial.replace(target)
    return target


def build_qwen2_tokenizer(ranks: Path, chat_template: str | None = None,
                          special_tokens: tuple[str, ...] = SPECIAL_TOKENS) -> PreTrainedTokenizerFast:
    """The Qwen2 tokenizer from ``qwen.tiktoken``: byte-level BPE, Qwen2's split pattern, NFC, specials.

    ``special_tokens``: Qwen2-VL's by default; the text-only Qwen2 models publish only the first three
    (:data:`TEXT_SPECIAL_TOKENS`), at the same ids."""
    if tuple(special_tokens) != SPECIAL_TOKENS[: len(special_tokens)]:
        raise ValueError(f"special tokens must be a prefix of Qwen2-VL's published order, got {special_tokens}")
    core = _Converter(vocab_file=str(ranks), pattern=PRETOKENIZE_REGEX).converted()
    core.normalizer = normalizers.NFC()  # as Qwen2Tokenizer does
    # Added after the 151,643 ranks in published order, each takes its published id.
    core.add_special_tokens([AddedToken(token, normalized=False, special=True) for token in special_tokens])
    moved = {t: core.token_to_id(t) for t in special_tokens if core.token_to_id(t) != SPECIAL_TOKEN_IDS[t]}
    if moved:
        raise ValueError(f"special tokens not at their published ids: {moved}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens=[t for t in special_tokens if t not in ("<|endoftext|>", "<|im_end|>")],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def qwen2_tokenizer_dir(cache: Path | None = None) -> Path:
    """A directory ``AutoTokenizer.from_pretrained`` loads: the converted Qwen2 tokenizer (built once, cached)."""
    root = cache or cache_dir()
    out = root / "tokenizer"
    marker = out / DONE_MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("format") == FORMAT:
        return out
    ranks = ranks_file(root)
    logger.info("converting the Qwen2 BPE ranks into a tokenizer in %s (once)", out)
    tokenizer = build_qwen2_tokenizer(ranks)
    partial = Path(tempfile.mkdtemp(dir=root, prefix="tokenizer.partial-"))  # concurrent sessions never share one
    tokenizer.save_pretrained(partial)
    (partial / DONE_MARKER).write_text(json.dumps({"format": FORMAT, "source": f"dashscope=={DASHSCOPE_VERSION}",
                                                   "member": TIKTOKEN_MEMBER}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    try:
        partial.rename(out)
    except OSError:  # another session finished first: its copy is the same
        shutil.rmtree(partial, ignore_errors=True)
    return out
