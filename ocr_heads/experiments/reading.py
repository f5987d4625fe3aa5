"""Reading along the answer (``--record_reading``): per generated step, whether each chosen head's argmax lies on
the page (any image token) and on the evidence, and how much attention mass it puts on each.

A batch generates once under capture (:func:`ocr_heads.attention.capture`, which combines with the run's edit)
with the :class:`~ocr_heads.attention.probes.ImageAttention` probe: its group masses give the mass on the image
and evidence tokens for every head, the recorder's producing-row argmax gives where each head looks hardest.
Step ``s`` is the row that produced generated token ``s`` (step 0: the prefill's last row). In a layer with a
sliding window, keys the window dropped hold 0 (as eager attention gives them): a long multi-page prompt's first
pages can read 0 there (tiny Gemma 3 on 8 slides: layers 0-4 have a 1024-token window).

The evidence is, in order of precision: the tiles of the answer characters (step1 samples, whose records hold one
pixel box per answer character), else every image token of the evidence pages a task names (``evidence_pages``,
0-based, or MP-DocVQA's ``answer_page_idx``), else unknown (the evidence columns stay empty).

This module is imported only when a run records reading: torch loads here, never when experiments are listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.heads import parse_head

if TYPE_CHECKING:
    from ocr_heads.models import ModelAdapter, ModelInputs
    from ocr_heads.tasks import Example

IMAGE = "image"
EVIDENCE = "evidence"
# Columns of STEM.reading.csv, one row per (sample, step, head).
READING_COLUMNS = ["id", "prompt", "task", "head_set", "step", "piece", "head", "argmax_on_image", "argmax_on_evidence",
                   "image_mass", "evidence_mass", "evidence_kind"]


@dataclass(frozen=True)
class Evidence:
    positions: list[int]
    kind: str  # "tiles" (answer characters), "pages" (evidence pages), "" (unknown)


def evidence_positions(example: Example, inputs: ModelInputs) -> Evidence:
    """The prompt positions of the example's evidence (see the module docstring)."""
    from ocr_heads.scores.rules import char_targets

    meta = example.meta
    if meta.get("evidence"):
        boxes = {int(page): page_boxes for page, page_boxes in meta["evidence"].items()}
        targets = char_targets([boxes], inputs.image_tokens)
        return Evidence(sorted(set().union(*targets)) if targets else [], "tiles")
    pages = meta.get("evidence_pages")
    if pages is None and meta.get("answer_page_idx") is not None:
        pages = [int(meta["answer_page_idx"])]
    if pages:
        wanted = {int(page) for page in pages}
        return Evidence(sorted(p for tokens in inputs.image_tokens if tokens.page in wanted for p in tokens.positions),
                        "pages")
    return Evidence([], "")


def generate_reading(adapter: ModelAdapter, batch: list[ModelInputs], examples: list[Example], heads: list[str],
                     max_new_tokens: int) -> tuple[list[list[int]], list[dict]]:
    """Generate the batch (as ``adapter.generate_batch``) while recording the reading of ``heads``; per sample,
    the generated ids and its reading record (JSON-ready: per step, per head)."""
    import torch

    from ocr_heads.attention import capture
    from ocr_heads.attention.probes import ImageAttention
    from ocr_heads.models.base import left_padding

    probes, kinds = [], []
    layers = tuple(sorted({parse_head(head)[0] for head in heads}))
    for inputs, example in zip(batch, examples, strict=True):
        image = [p for tokens in inputs.image_tokens for p in tokens.positions]
        if not image:
            raise ValueError(f"example {example.id}: --record_reading needs image tokens (a page task)")
        evidence = evidence_positions(example, inputs)
        groups = {IMAGE: image, **({EVIDENCE: evidence.positions} if evidence.positions else {})}
        # Only the reading heads' layers, and of the per-token image map one head: the group masses are the point.
        probes.append([ImageAttention(tuple(image), groups, layers=layers, heads=(0,), dtype=torch.float32)])
        kinds.append(evidence.kind if evidence.positions else "")
    with capture(adapter) as recorder:
        recorder.reset(max(i.prompt_length for i in batch), probes, left_padding(batch))
        generated = adapter.generate_batch(batch, max_new_tokens)
        records = recorder.results([len(ids) for ids in generated])
        results = [recorder.probe_results(i, steps=len(ids))[ImageAttention] for i, ids in enumerate(generated)]
    readings = []
    for (probe,), record, result, kind in zip(probes, records, results, kinds, strict=True):
        mass = {name: by_layer(values.numpy(), result.layers) for name, values in result.group_mass.items()}
        evidence = set(dict(probe.groups).get(EVIDENCE, ()))
        readings.append(reading_record(record.argmax.numpy(), mass, heads, set(probe.positions), evidence, kind))
    return generated, readings


def by_layer(values: np.ndarray, layers: tuple[int, ...]) -> np.ndarray:
    """(steps, len(layers), heads) values of the listed layers as (steps, max layer + 1, heads), NaN elsewhere."""
    full = np.full((values.shape[0], max(layers) + 1, values.shape[2]), np.nan, dtype=np.float64)
    full[:, list(layers)] = values
    return full


def reading_record(argmax: np.ndarray, mass: dict[str, np.ndarray], heads: list[str], image: set[int],
                   evidence: set[int], kind: str) -> dict:
    """The reading of ``heads`` from a sample's producing-row argmax (steps, layers, heads) and group masses
    (name -> (steps, layers, heads)): per step, one value per head. Pure: tested on hand-built arrays."""
    index = [parse_head(head) for head in heads]
    steps = argmax.shape[0]
    on_image = [[int(argmax[s, layer, head]) in image for layer, head in index] for s in range(steps)]
    record = {"heads": list(heads), "evidence_kind": kind, "argmax_on_image": on_image,
              "image_mass": [[round(float(mass[IMAGE][s, layer, head]), 6) for layer, head in index]
                             for s in range(steps)]}
    if evidence:
        record["argmax_on_evidence"] = [[int(argmax[s, layer, head]) in evidence for layer, head in index]
                                        for s in range(steps)]
        record["evidence_mass"] = [[round(float(mass[EVIDENCE][s, layer, head]), 6) for layer, head in index]
                                   for s in range(steps)]
    return record


def reading_rows(sample_id: str, prompt: str, task: str, head_set: str, pieces: list[str],
                 reading: dict) -> list[dict]:
    """The CSV rows of one sample's reading record (``pieces``: the text each generated token adds)."""
    rows = []
    has_evidence = "argmax_on_evidence" in reading
    for step, on_image in enumerate(reading["argmax_on_image"]):
        for h, head in enumerate(reading["heads"]):
            rows.append({
                "id": sample_id, "prompt": prompt, "task": task, "head_set": head_set, "step": step,
                "piece": pieces[step] if step < len(pieces) else "", "head": head,
                "argmax_on_image": int(on_image[h]),
                "argmax_on_evidence": int(reading["argmax_on_evidence"][step][h]) if has_evidence else "",
                "image_mass": reading["image_mass"][step][h],
                "evidence_mass": reading["evidence_mass"][step][h] if has_evidence else "",
                "evidence_kind": reading["evidence_kind"]})
    return rows
