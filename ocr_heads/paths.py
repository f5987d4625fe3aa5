"""Where the pipeline's files live: one home for the scores/ layout and a model's short name.

    ROOT/<modality>/MODEL_<tag>.json            a score file (``_mean.json``, ``.meta.json`` beside it)
    ROOT/heads/MODEL_<tag>_<rule>.json          step3's head list from it

``<modality>`` (image, text) and ``<tag>`` (fg, te, prefill, ...) come from the registered score
(:mod:`ocr_heads.scores`); MODEL is the last path component of the model id.
"""

from __future__ import annotations

from pathlib import Path

from ocr_heads.scores import HeadScore, by_tag, get_score


def model_name(model_id: str) -> str:
    """``Qwen/Qwen2-VL-2B-Instruct`` or ``/models/Qwen2-VL-2B-Instruct/`` -> ``Qwen2-VL-2B-Instruct``."""
    return model_id.rstrip("/").split("/")[-1]


def _score(score: HeadScore | str) -> HeadScore:
    """A score given as itself, its name or its file tag."""
    if isinstance(score, HeadScore):
        return score
    return by_tag(score) or get_score(score)


def score_stem(model: str, score: HeadScore | str) -> str:
    return f"{model}_{_score(score).tag}"


def score_file(root: str | Path, model: str, score: HeadScore | str) -> Path:
    score = _score(score)
    return Path(root) / score.modality / f"{score_stem(model, score)}.json"


def heads_file(root: str | Path, model: str, score: HeadScore | str, rule: str) -> Path:
    return Path(root) / "heads" / f"{score_stem(model, score)}_{rule}.json"
