"""The head rankings exp_validate compares: score files (or step3 head lists) of registered scores, and the
checks that they belong together (one model, one protocol, one data set) and fit the model they are
tested on. Torch-free: everything here reads JSON."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocr_heads.core.errors import UserError
from ocr_heads.core.heads import all_heads, check_heads_exist, parse_head
from ocr_heads.core.io import read_json
from ocr_heads.core.kinds import Modality
from ocr_heads.core.provenance import MODEL_KEY, file_fingerprint
from ocr_heads.scores import all_scores, get_score
from ocr_heads.scores.files import companion_paths, load_scores
from ocr_heads.scores.selection import load_head_ranking

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ScoredHeads:
    """One score's ranking of the model's heads and where it came from."""

    path: Path
    score: str  # the registered score's name
    modality: Modality  # which task its samples were: image (pages) or text
    ranking: list[str]  # best first
    values: dict[str, float]  # every head's value (a head list: the listed score, 0 for heads not listed)
    meta: dict[str, Any]  # the sidecar (score file) or the head list's record, plus its source's sidecar

    @property
    def model_identity(self) -> str | None:
        """The model that made it: its fingerprint where recorded, else its name."""
        return self.meta.get(MODEL_KEY) or self.meta.get("model")

    @property
    def fingerprint(self) -> str:
        return file_fingerprint(self.path)


def _head_list(path: Path, record: dict) -> tuple[str | None, dict[str, float], dict]:
    """A step3 head list: its kind, listed scores and record (plus its source score file's sidecar)."""
    meta = dict(record)
    source = record.get("source")
    if source:
        sidecar, _ = companion_paths(source)
        if sidecar.is_file():
            meta = {**read_json(sidecar), **{k: v for k, v in record.items() if v is not None}}
    values = {item["head"]: float(item.get("score", 0.0)) for item in record["heads"]}
    return record.get("kind"), values, meta


def load_scored_heads(path: str | Path) -> ScoredHeads:
    """Read a score file (ranked by each head's plain mean) or a step3 head list; ValueError when it names no
    registered score."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("heads"), list):
        kind, values, meta = _head_list(path, data)
        layers, heads = meta.get("num_layers"), meta.get("num_heads")
        if layers is None or heads is None:
            raise ValueError(f"{path}: a head list without num_layers/num_heads (not a step3 output)")
        values = {head: values.get(head, 0.0) for head in all_heads(int(layers), int(heads))}
    elif isinstance(data, list):
        raise ValueError(f"{path}: a plain list of heads says not which score found them; pass its score file "
                         "or its step3 head list")
    else:
        scores = load_scores(path)  # refuses a sidecar kind that is not registered
        kind, values, meta = scores.kind, scores.means, scores.meta
    if kind is None:
        raise ValueError(f"{path}: no score kind (no sidecar and no known file tag); registered scores: "
                         f"{', '.join(all_scores())}")
    if kind not in all_scores():
        raise ValueError(f"{path}: kind {kind!r} is not a registered score; registered: {', '.join(all_scores())}")
    ranking = load_head_ranking(path)
    for name in ranking:
        parse_head(name)
    if values and not any(values.values()):
        # No silent zeros: a file with no answer-token events (a random model) still ranks its heads, by name.
        logger.warning("%s: every head scores 0 (no answer-token events?): its top-k heads are arbitrary, "
                       "not found by the score", path)
    return ScoredHeads(path, kind, Modality(get_score(kind).modality), ranking, values, meta)


def _differing(scored: Sequence[ScoredHeads], what: str, one: str, value: Any) -> None:
    seen: dict[str, list[str]] = {}
    for item in scored:
        found = value(item)
        if found is not None:
            seen.setdefault(repr(found), []).append(f"{item.path.name} ({item.score})")
    if len(seen) > 1:
        groups = "; ".join(f"{', '.join(names)}: {key}" for key, names in seen.items())
        raise UserError(f"--scores come from different {what}: {groups}. Validate one {one}'s scores per run")


def check_together(scored: Sequence[ScoredHeads]) -> None:
    """One run compares scores of one model, one page protocol and one data set, each score once."""
    names = [item.score for item in scored]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserError(f"--scores gives score {', '.join(twice)} more than once: one file per score")
    _differing(scored, "models", "model", lambda item: item.model_identity)
    _differing(scored, "protocols", "protocol", lambda item: item.meta.get("protocol"))
    _differing(scored, "data (step1 folders)", "data set", lambda item: item.meta.get("data_fingerprint"))


def check_fits_model(scored: Sequence[ScoredHeads], num_layers: int, num_heads: int, fingerprint: str) -> None:
    """Every ranked head exists in the model under test, and the scores were made by that model."""
    for item in scored:
        try:
            check_heads_exist(item.ranking, num_layers, num_heads)
        except ValueError as err:
            raise UserError(f"{item.path}: {err}") from None
        recorded = item.meta.get(MODEL_KEY)
        if recorded is not None and recorded != fingerprint:
            raise UserError(f"{item.path} was made by another model (fingerprint {recorded}, "
                            f"{item.meta.get('model_id') or item.meta.get('model')}) than --model_id "
                            f"(fingerprint {fingerprint})")
