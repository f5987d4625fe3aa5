"""Which retrieval-score file belongs to which VLM's OCR-score file: the paper sets the OCR heads of each VLM beside
the retrieval heads of the LLM it is built on (Wu et al.'s scores of Qwen2-1.5B, Qwen2-7B, InternLM2.5-7B-chat).

Pairs are given (``--base_llm VLM_SCORE=LLM_SCORE``) or found among the report's files by the paper's mapping
(:data:`BASE_LLMS`, matched on the model names in the sidecars, case-insensitive prefixes).
"""

from __future__ import annotations

from pathlib import Path

from ocr_heads.scores.files import ScoreFile

# VLM name prefix -> name prefixes of its base LLM (the paper's three pairs).
BASE_LLMS = {
    "qwen2-vl-2b": ("qwen2-1.5b",),
    "qwen2-vl-7b": ("qwen2-7b",),
    "internvl2-8b": ("internlm2_5-7b", "internlm2.5-7b"),
}
# The paper's shares of heads scoring > 0.1 (%), from the authors' analysis notebook.
PAPER_SHARES = {"qwen2-vl-2b": 16.4, "qwen2-vl-7b": 8.7, "internvl2-8b": 4.3,
                "qwen2-1.5b": 5.7, "qwen2-7b": 5.0, "internlm2_5-7b": 2.9, "internlm2.5-7b": 2.9}


def parse_pair(text: str) -> tuple[Path, Path]:
    """``"VLM.json=LLM.json"`` -> the two paths (ValueError for anything else)."""
    vlm, sep, llm = text.partition("=")
    if not sep or not vlm or not llm:
        raise ValueError(f"{text!r}: expected VLM_SCORE=LLM_SCORE (an OCR score file, its base LLM's "
                         "retrieval score file)")
    return Path(vlm), Path(llm)


def paper_share(model: str | None) -> float | None:
    """The paper's share (%) of heads > 0.1 for a model whose name starts with one of its models, else None."""
    name = (model or "").lower()
    return next((share for prefix, share in PAPER_SHARES.items() if name.startswith(prefix)), None)


def base_prefixes(model: str | None) -> tuple[str, ...]:
    """Name prefixes of the base LLM of the VLM ``model`` (the paper's mapping); () for another model."""
    name = (model or "").lower()
    return next((bases for prefix, bases in BASE_LLMS.items() if name.startswith(prefix)), ())


def known_pairs(files: list[ScoreFile]) -> list[tuple[ScoreFile, ScoreFile]]:
    """(OCR file of a VLM, retrieval file of its base LLM) for every pair of :data:`BASE_LLMS` among ``files``."""
    pairs = []
    for vlm in files:
        bases = base_prefixes(vlm.model) if vlm.kind == "ocr" else ()
        if bases:
            pairs += [(vlm, llm) for llm in files
                      if llm.kind == "retrieval" and (llm.model or "").lower().startswith(bases)]
    return pairs
