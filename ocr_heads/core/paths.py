"""Where the pipeline's files live: one home for the scores/ and results/ layouts and a model's short name.

    ROOT/<modality>/MODEL_<tag>.json            a score file; beside it ``_mean.json``, ``.meta.json`` (sidecar)
                                                and ``.samples.jsonl`` (step2's per-sample log)
    ROOT/heads/MODEL_<tag>_<rule>.json          step3's head list from it
    OUT/<experiment>/MODEL/STEM.json            one experiment run (``.samples.jsonl``, ``.config.json`` beside it)
    OUT/<experiment>.csv                        the experiment's rows, all runs
    OUT/case/MODEL_case.json                    the case study (``.meta.json``, ``.samples.jsonl`` beside it)
    OUT/<score name>_heads.json                 the demo's head list of a score (ocr_heads.json, ...)

``<modality>`` (image, text) and ``<tag>`` (fg, te, prefill, ...) come from the registered score, so the
score files' own paths are built in :mod:`ocr_heads.scores.files`; MODEL is the last path component of
the model id (NAME-TAG with ``--tag``).
"""

from __future__ import annotations

from pathlib import Path

SIDECAR = ".meta.json"
SAMPLE_LOG = ".samples.jsonl"
# What follows a run's stem in its files' names, longest first (a log also ends in "l", not ".json").
_ENDINGS = (SAMPLE_LOG, SIDECAR, ".json")


def model_name(model_id: str) -> str:
    """``Qwen/Qwen2-VL-2B-Instruct`` or ``/models/Qwen2-VL-2B-Instruct/`` -> ``Qwen2-VL-2B-Instruct``."""
    return model_id.rstrip("/").split("/")[-1]


def companion(path: str | Path, ending: str) -> Path:
    """The file of the same run with another ending: ``X_fg.samples.jsonl`` -> ``X_fg.meta.json``."""
    path = Path(path)
    for old in _ENDINGS:
        if path.name.endswith(old):
            return path.with_name(path.name.removesuffix(old) + ending)
    raise ValueError(f"{path}: not a run's file (ends in none of {', '.join(_ENDINGS)})")


def experiment_dir(out: str | Path, experiment: str, model: str) -> Path:
    return Path(out) / experiment / model


def experiment_csv(out: str | Path, experiment: str) -> Path:
    return Path(out) / f"{experiment}.csv"


def case_file(out: str | Path, model: str, ending: str = ".json") -> Path:
    """The case study's per-character maps, or with ``ending`` its sidecar or per-sample log."""
    return Path(out) / "case" / f"{model}_case{ending}"
