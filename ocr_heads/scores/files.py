"""Score files: per-head event lists in the authors' layout, a ``_mean`` companion and our sidecar.

Layout (the authors' release loads unchanged)::

    NAME.json        {"l0_h0": [v, v, ...], "l0_h1": [...], ...}   per-event values, unequal lengths ok
    NAME_mean.json   {"l0_h0": mean, ...}                          plain mean of each list (zeros included)
    NAME.meta.json   {"kind": "ocr"|"retrieval"|..., "model": ..., "num_layers": L, "num_heads": H, ...}

Kinds are the registered score names and file tags their tags (:mod:`ocr_heads.scores`).

The authors name their companions differently: ``X_fg_2.json`` -> ``X_fg_mean_2.json`` (image) and
``X_te_2.json`` -> ``X_mean_te_2.json`` (text). Only the per-event files were released, so a missing
companion is normal: means are always recomputed from the lists; a companion, when present, is cross-checked.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ocr_heads.core.heads import all_heads, check_heads_exist, parse_head
from ocr_heads.core.io import read_json, write_json_atomic
from ocr_heads.scores import HeadScore, all_scores, by_tag, get_score

logger = logging.getLogger(__name__)

KINDS = tuple(all_scores())
# File tags of the registered scores; the authors' are fg/cg (OCR, fine-/coarse-grained boxes) and te (retrieval).
_TAGS = sorted({tag for score in all_scores().values() for tag in (score.tag, *score.other_tags)}, key=len,
               reverse=True)
_AUTHORS_NAME_RE = re.compile(
    rf"^(?P<model>.+?)_(?:mean_)?(?P<tag>{'|'.join(map(re.escape, _TAGS))})(?:_mean)?(?:_(?P<run>\d+))?$")
_REQUIRED_META = ("kind", "model", "num_layers", "num_heads")


@dataclass
class ScoreFile:
    """One loaded score file. ``per_head`` and ``means`` are keyed by head name in layer-major order."""

    path: Path | None
    per_head: dict[str, list[float]]
    means: dict[str, float]
    kind: str | None
    model: str | None
    num_layers: int
    num_heads: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def heads(self) -> list[str]:
        return all_heads(self.num_layers, self.num_heads)

    @property
    def not_scoreable_layers(self) -> list[int]:
        """Layers without attention rows (a hybrid model's linear-attention layers), from the sidecar."""
        return sorted(int(layer) for layer in self.meta.get("not_scoreable_layers", []))

    @property
    def label(self) -> str:
        """Short name for plots and tables: ``model (kind)``, falling back to the file name."""
        name = self.model or (self.path.stem if self.path else "scores")
        return f"{name} ({self.kind})" if self.kind else name

    def frequencies(self) -> dict[str, float]:
        """Activation frequency of each head: the fraction of its events with a non-zero value (0 if none)."""
        return {head: nonzero_fraction(values) for head, values in self.per_head.items()}

    def matrix(self, values: dict[str, float] | None = None) -> np.ndarray:
        """A ``(num_layers, num_heads)`` array of ``values`` (default: the means)."""
        return to_matrix(self.means if values is None else values, self.num_layers, self.num_heads)


def mean_of(values: list[float]) -> float:
    """Plain mean as the authors compute it (``sum/len``, so bit-identical to their ``_mean`` files).

    A head with no events scores 0: it was never seen hitting.
    """
    return sum(values) / len(values) if values else 0.0


def nonzero_fraction(values: list[float]) -> float:
    return sum(1 for value in values if value != 0) / len(values) if values else 0.0


def share_above(values: list[float], threshold: float) -> float:
    """The share of ``values`` above ``threshold`` (0 when there are none): a head's frequency score."""
    return sum(1 for value in values if value > threshold) / len(values) if values else 0.0


def to_matrix(values: dict[str, float], num_layers: int, num_heads: int) -> np.ndarray:
    grid = np.zeros((num_layers, num_heads), dtype=float)
    for name, value in values.items():
        layer, head = parse_head(name)
        grid[layer, head] = value
    return grid


def companion_paths(path: str | Path) -> tuple[Path, list[Path]]:
    """Where the sidecar and the candidate ``_mean`` companions of a score file live (ours first)."""
    path = Path(path)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    sidecar = path.with_name(f"{stem}.meta.json")
    means = [path.with_name(f"{stem}_mean.json")]
    match = _AUTHORS_NAME_RE.match(stem)
    if match and match.group("run"):
        model, tag, run = match.group("model"), match.group("tag"), match.group("run")
        means += [
            path.with_name(f"{model}_{tag}_mean_{run}.json"),
            path.with_name(f"{model}_mean_{tag}_{run}.json"),
        ]
    return sidecar, means


def infer_from_name(path: str | Path) -> tuple[str | None, str | None]:
    """``Qwen2-VL-2B-Instruct_te_2.json`` -> ``("retrieval", "Qwen2-VL-2B-Instruct")``, else Nones."""
    stem = Path(path).name.removesuffix(".json")
    match = _AUTHORS_NAME_RE.match(stem)
    if match is None:
        return None, None
    return by_tag(match.group("tag")).name, match.group("model")


def validate_per_head(per_head: Any, source: str) -> tuple[dict[str, list[float]], int, int]:
    """Check a ``{head: [numbers]}`` mapping; return it in layer-major order with the inferred model shape."""
    if not isinstance(per_head, dict):
        raise ValueError(
            f"{source}: expected a JSON object {{'l0_h0': [values...], ...}}, got {type(per_head).__name__}"
        )
    if not per_head:
        raise ValueError(f"{source}: the score file is empty (no heads)")
    parsed: dict[tuple[int, int], list[float]] = {}
    for name, values in per_head.items():
        try:
            key = parse_head(name)
        except ValueError:
            raise ValueError(
                f"{source}: key {name!r} is not a head name (expected 'l<layer>_h<head>', e.g. 'l3_h1')"
            ) from None
        if isinstance(values, (int, float)) and not isinstance(values, bool):
            raise ValueError(
                f"{source}: head {name} holds a single number, not a list of event values "
                "(is this a _mean file? pass the per-event file instead)"
            )
        if not isinstance(values, list):
            raise ValueError(
                f"{source}: head {name} must map to a list of numbers, got {type(values).__name__}"
            )
        for index, value in enumerate(values):
            # bool is an int subclass, but True/False in a score list means a broken writer.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{source}: head {name} value #{index} is not a finite number: {value!r}")
        parsed[key] = values
    num_layers = max(layer for layer, _ in parsed) + 1
    num_heads = max(head for _, head in parsed) + 1
    missing = [
        f"l{layer}_h{head}"
        for layer in range(num_layers)
        for head in range(num_heads)
        if (layer, head) not in parsed
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{source}: {len(missing)} heads missing for a {num_layers} layers x {num_heads} heads model: "
            f"{shown}"
        )
    ordered = {
        f"l{layer}_h{head}": parsed[(layer, head)] for layer in range(num_layers) for head in range(num_heads)
    }
    return ordered, num_layers, num_heads


def load_scores(path: str | Path) -> ScoreFile:
    """Load a score file (ours or the authors'); kind/model come from the sidecar, else from the file name."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: the score file is empty (0 bytes)")
    per_head, num_layers, num_heads = validate_per_head(read_json(path), str(path))
    means = {head: mean_of(values) for head, values in per_head.items()}

    sidecar, mean_candidates = companion_paths(path)
    meta: dict[str, Any] = read_json(sidecar) if sidecar.is_file() else {}
    kind, model = infer_from_name(path)
    kind = meta.get("kind", kind)
    model = meta.get("model", model)
    if kind is not None and kind not in KINDS:
        raise ValueError(f"{sidecar}: kind must be one of {KINDS}, got {kind!r}")
    for key, inferred in (("num_layers", num_layers), ("num_heads", num_heads)):
        if key in meta and meta[key] != inferred:
            raise ValueError(f"{path}: the sidecar says {key}={meta[key]} but the score file has {inferred}")

    for candidate in mean_candidates:
        if candidate.is_file():
            _cross_check_means(candidate, means)
            break
    else:
        logger.debug("%s: no _mean companion; means recomputed from the lists", path)
    return ScoreFile(path, per_head, means, kind, model, num_layers, num_heads, meta)


def _cross_check_means(path: Path, means: dict[str, float]) -> None:
    """The lists are the source of truth; a companion that disagrees is reported, not trusted."""
    stored = read_json(path)
    if not isinstance(stored, dict) or set(stored) != set(means):
        logger.warning("%s: the _mean companion does not cover the same heads; ignoring it", path)
        return
    bad = [
        head
        for head, value in means.items()
        if not isinstance(stored[head], (int, float)) or not math.isclose(stored[head], value, abs_tol=1e-9)
    ]
    if bad:
        logger.warning(
            "%s: %d means disagree with the event lists (e.g. %s); using the lists", path, len(bad), bad[0]
        )


def save_scores(path: str | Path, per_head: dict[str, list[float]], meta: dict[str, Any]) -> None:
    """Write NAME.json, NAME_mean.json and NAME.meta.json atomically; same input, byte-identical files."""
    path = Path(path)
    if not path.name.endswith(".json") or path.name.endswith((".meta.json", "_mean.json")):
        raise ValueError(f"{path}: a score file name must end in .json (not .meta.json or _mean.json)")
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"meta is missing required keys: {', '.join(missing)}")
    if meta["kind"] not in KINDS:
        raise ValueError(f"meta kind must be one of {KINDS}, got {meta['kind']!r}")
    ordered, num_layers, num_heads = validate_per_head(per_head, str(path))
    check_heads_exist(ordered, meta["num_layers"], meta["num_heads"])
    if (num_layers, num_heads) != (meta["num_layers"], meta["num_heads"]):
        raise ValueError(
            f"{path}: the scores cover {num_layers} layers x {num_heads} heads but meta says "
            f"{meta['num_layers']} x {meta['num_heads']}"
        )
    # float() so that 0 and 0.0 always serialise the same way.
    values = {head: [float(value) for value in events] for head, events in ordered.items()}
    means = {head: mean_of(events) for head, events in values.items()}
    sidecar, mean_candidates = companion_paths(path)
    write_json_atomic(path, values)
    write_json_atomic(mean_candidates[0], means)
    write_json_atomic(sidecar, _sorted(meta))


def _sorted(obj: Any) -> Any:
    """Sort dict keys recursively so the sidecar bytes do not depend on how meta was built."""
    if isinstance(obj, dict):
        return {key: _sorted(obj[key]) for key in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_sorted(item) for item in obj]
    return obj


# Where a score's files live (the layout is described in ocr_heads.core.paths).
def _score(score: HeadScore | str) -> HeadScore:
    """A score given as itself, its name or its file tag."""
    if isinstance(score, HeadScore):
        return score
    return by_tag(score) or get_score(score)


def score_stem(model: str, score: HeadScore | str) -> str:
    return f"{model}_{_score(score).tag}"


def score_file(root: str | Path, model: str, score: HeadScore | str, ending: str = ".json") -> Path:
    """A score file, or with ``ending`` (:data:`SIDECAR`, :data:`SAMPLE_LOG`) one of its companions."""
    score = _score(score)
    return Path(root) / score.modality / f"{score_stem(model, score)}{ending}"


def heads_file(root: str | Path, model: str, score: HeadScore | str, rule: str) -> Path:
    return Path(root) / "heads" / f"{score_stem(model, score)}_{rule}.json"


def named_heads_file(out: str | Path, score: HeadScore | str) -> Path:
    """A head list named after its score, as the demo writes them: ``OUT/ocr_heads.json``."""
    return Path(out) / f"{_score(score).name}_heads.json"
