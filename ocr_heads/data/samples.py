"""Needle samples on rendered pages: build, save and load step1 records.

A record (one line of ``samples.jsonl``) is::

    {id, question, answer, context, pages: [paths relative to the data dir],
     evidence: {page_index: [[x0, y0, x1, y1] per answer character]},
     occurrences: [{span: [start, end], evidence: {...}}, ...],  # every answer slot of the needle
     needle: str, needle_span: [start, end], task, length, depth, source}

``evidence`` is the first answer slot of the needle (the design's format); ``occurrences`` lists
every slot, since a passkey needle states the key twice. Slots are where the needle builder put the
answer (``Needle.answer_slots``), never other places its letters happen to occur: the "e" of "The"
is template text, not the single-character passkey "e".
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ocr_heads.core.io import append_jsonl, read_jsonl
from ocr_heads.data.haystack import CHARS_PER_TOKEN, Needle, haystack_slice, insert_needle
from ocr_heads.data.images import open_rgb
from ocr_heads.data.render import PageLayout, PageStyle

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
REQUIRED_FIELDS = ("id", "question", "answer", "context", "pages", "evidence")

Box = list[int]


@dataclass
class Sample:
    """One step1 record with its page paths resolved against the data dir."""

    id: str
    question: str
    answer: str
    context: str
    page_paths: list[Path]
    evidence: dict[int, list[Box]]
    occurrences: list[dict] = field(default_factory=list)
    needle_span: tuple[int, int] | None = None
    record: dict = field(default_factory=dict)

    def load_pages(self) -> list[Image.Image]:
        pages = []
        for path in self.page_paths:
            if not path.is_file():
                raise FileNotFoundError(f"sample {self.id}: page image missing: {path}")
            pages.append(open_rgb(path, f"sample {self.id}: cannot read page image {path}"))
        return pages

    def all_evidence(self) -> list[dict[int, list[Box]]]:
        """Evidence of every answer occurrence (falls back to ``evidence`` for records without them)."""
        if not self.occurrences:
            return [self.evidence]
        return [{int(k): v for k, v in occ["evidence"].items()} for occ in self.occurrences]


def find_answer_spans(context: str, answer: str, within: tuple[int, int]) -> list[tuple[int, int]]:
    """Every occurrence of ``answer`` inside ``context[within[0]:within[1]]``."""
    spans, start = [], within[0]
    while (found := context.find(answer, start, within[1])) >= 0:
        spans.append((found, found + len(answer)))
        start = found + 1
    return spans


def evidence_boxes(layout: PageLayout, span: tuple[int, int]) -> dict[int, list[Box]]:
    """One box per character of ``span``, grouped by the page where it is drawn (in answer order)."""
    grouped: dict[int, list[Box]] = {}
    for offset in range(*span):
        char = layout.char_box(offset)
        grouped.setdefault(char.page, []).append(list(char.box))
    return grouped


def build_sample(
    sample_id: str,
    haystack: str,
    needle: Needle,
    depth: float,
    out_dir: Path,
    style: PageStyle | None = None,
    extra: dict | None = None,
) -> dict:
    """Insert the needle, render the pages under ``out_dir/sample_id/`` and return the record."""
    if not haystack.strip():
        raise ValueError(f"sample {sample_id}: empty haystack")
    if needle.answer not in needle.text:
        raise ValueError(f"sample {sample_id}: answer {needle.answer!r} is not in the needle {needle.text!r}")
    context, needle_start = insert_needle(haystack, needle.text, depth)
    return render_record(sample_id, context, needle_start, needle, out_dir, style, {"depth": depth, **(extra or {})})


def render_record(
    sample_id: str,
    context: str,
    needle_start: int,
    needle: Needle,
    out_dir: Path,
    style: PageStyle | None = None,
    extra: dict | None = None,
) -> dict:
    """Render a context that already holds the needle at ``needle_start``; returns the record."""
    if context[needle_start : needle_start + len(needle.text)] != needle.text:
        raise ValueError(f"sample {sample_id}: the needle is not at offset {needle_start} of the context")
    needle_span = (needle_start, needle_start + len(needle.text))
    spans = [(needle_start + start, needle_start + end) for start, end in needle.answer_slots()]
    if not spans:
        raise ValueError(f"sample {sample_id}: answer {needle.answer!r} is not in the needle {needle.text!r}")
    layout = PageLayout(context, style)
    page_dir = out_dir / sample_id
    page_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for index, image in enumerate(layout.render()):
        image.save(page_dir / f"page_{index}.png")
        pages.append(f"{sample_id}/page_{index}.png")
    occurrences = [{"span": list(span), "evidence": evidence_boxes(layout, span)} for span in spans]
    record = {
        "id": sample_id,
        "question": needle.question,
        "answer": needle.answer,
        "context": context,
        "pages": pages,
        "evidence": occurrences[0]["evidence"],
        "occurrences": occurrences,
        "needle": needle.text,
        "needle_span": list(needle_span),
    }
    record.update(extra or {})
    return record


def generate_from_contexts(
    out_dir: str | Path,
    task: str,
    contexts: dict[int, list[tuple[str, Needle]]],
    seed: int,
    source: str,
    style: PageStyle | None = None,
) -> Path:
    """Render ready-made contexts (each already holding its needle), per length; a rerun resumes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples_path = out_dir / SAMPLES_FILE
    done = {record["id"] for record in read_jsonl(samples_path)}
    jobs = [(length, i, item) for length, items in contexts.items() for i, item in enumerate(items)]
    for length, i, (context, needle) in tqdm(jobs, desc=f"step1 {task}", unit="sample"):
        sample_id = f"{task}_{length}_{i:04d}"
        if sample_id in done:
            continue
        record = render_record(sample_id, context, context.index(needle.text), needle, out_dir, style,
                               extra={"task": task, "length": length, "source": source, "seed": seed})
        append_jsonl(samples_path, record)
    return samples_path


def generate_samples(
    out_dir: str | Path,
    task: str,
    n: int,
    lengths: list[int],
    seed: int,
    corpus: str,
    make_needle: Callable[[random.Random], Needle],
    style: PageStyle | None = None,
    source: str = "embedded",
) -> Path:
    """Write ``n`` samples per length to ``out_dir/samples.jsonl``; a rerun keeps finished samples."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples_path = out_dir / SAMPLES_FILE
    done = {record["id"] for record in read_jsonl(samples_path)}
    jobs = [(length, i) for length in lengths for i in range(n)]
    for length, i in tqdm(jobs, desc=f"step1 {task}", unit="sample"):
        sample_id = f"{task}_{length}_{i:04d}"
        # One generator per sample: the same (seed, length, i) gives the same sample in any run.
        rng = random.Random(f"{seed}:{task}:{length}:{i}")
        needle = make_needle(rng)
        haystack = haystack_slice(corpus, length * CHARS_PER_TOKEN, rng)
        depth = round(rng.random(), 4)
        if sample_id in done:
            continue
        record = build_sample(sample_id, haystack, needle, depth, out_dir, style,
                              extra={"task": task, "length": length, "source": source, "seed": seed})
        append_jsonl(samples_path, record)
    logger.info("%d samples in %s", len(jobs), samples_path)
    return samples_path


def _sample_from_record(record: dict, data_dir: Path, line: int) -> Sample:
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise ValueError(f"{data_dir / SAMPLES_FILE}: record {line} is missing field(s) {', '.join(missing)}")
    needle_span = tuple(record["needle_span"]) if "needle_span" in record else None
    answer = record["answer"]
    if needle_span is not None and answer not in record["context"][needle_span[0] : needle_span[1]]:
        raise ValueError(f"sample {record['id']}: answer {answer!r} does not occur in its needle/context")
    if answer not in record["context"]:
        raise ValueError(f"sample {record['id']}: answer {answer!r} does not occur in the context")
    evidence = {int(page): boxes for page, boxes in record["evidence"].items()}
    for boxes in evidence.values():
        for box in boxes:
            if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"sample {record['id']}: zero-size or malformed evidence box {box}")
    return Sample(
        id=record["id"],
        question=record["question"],
        answer=answer,
        context=record["context"],
        page_paths=[data_dir / page for page in record["pages"]],
        evidence=evidence,
        occurrences=record.get("occurrences", []),
        needle_span=needle_span,
        record=record,
    )


def load_samples(data_dir: str | Path, limit: int | None = None) -> list[Sample]:
    """Read and validate ``data_dir/samples.jsonl`` (step1 output)."""
    data_dir = Path(data_dir)
    path = data_dir / SAMPLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no step1 output at {path} (run step1_passkey.py or step1_niah.py first)")
    samples = [_sample_from_record(r, data_dir, i) for i, r in enumerate(read_jsonl(path), start=1)]
    if not samples:
        raise ValueError(f"{path} holds no samples")
    return samples[:limit] if limit else samples


def load_sample_dirs(data_dirs: list[str | Path], limit: int | None = None) -> list[Sample]:
    """The samples of several step1 outputs, in order (``limit`` applies to each), e.g. passkey and NIAH
    together as the authors' step2 scores both; ids must be unique across them (they key the run logs)."""
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for data_dir in data_dirs:
        for sample in load_samples(data_dir, limit):
            if sample.id in seen:
                raise ValueError(f"sample id {sample.id} is in both {seen[sample.id]} and {data_dir}")
            seen[sample.id] = Path(data_dir)
            samples.append(sample)
    return samples
