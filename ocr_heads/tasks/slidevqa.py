"""``slide``: SlideVQA dev (Tanaka et al. 2023), questions over slide decks, up to 8 slides per question, EM/F1.

Read from a local copy laid out as the public release (github.com/nttmdlab-nlp/SlideVQA; no hub loader here):

    SlideVQA/annotations/qa/dev.jsonl                  one question per line
    SlideVQA/images/dev/<deck_name>/<image file>       the deck's slides

Each line keeps the release's field names: ``deck_name``, ``image_urls`` (the deck's slide URLs in slide order),
``question``, ``answer``, ``evidence_pages`` (1-based slide numbers), ``qa_id`` (the id; a line without it is
``slide_<line index>``), plus fields this task ignores (``deck_url``, ``arithmetic_expression``,
``reasoning_type``, ``answer_type``).

What is assumed, following the authors' masking code (their ``exp_masking.py``, dataset ``slide``):
- a slide's file is ``images/dev/<deck_name>/<last component of its image URL>`` (query string dropped); an
  ``image_urls`` entry that is a local path (absolute, or relative to the SlideVQA folder) is taken as it is;
- the model sees the deck's first 8 slides; a question whose first evidence slide lies beyond them is passed
  over (it does not count towards --n), as theirs skips ``evidence_pages[0] - 1 > 7``;
- the answer (a string or a number in the release) is the one gold, scored by EM/F1 as their SupportEmF1Metric.
Questions whose slide files are missing are skipped with a count (a warning); none left is an error.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ocr_heads.tasks.base import TEXT_QA_METRICS, Example, Task
from ocr_heads.tasks.docvqa import INSTRUCTION
from ocr_heads.tasks.loaders import Row, open_image

logger = logging.getLogger(__name__)

SPLIT = "dev"
ANNOTATIONS = f"annotations/qa/{SPLIT}.jsonl"
MAX_PAGES = 8  # the slides the model sees: the deck's first 8 (the authors' img_path[:8])
REQUIRED = ("deck_name", "image_urls", "question", "answer", "evidence_pages")  # qa_id too where present


def annotation_file(source: str) -> Path:
    """The dev annotations of a SlideVQA folder (or the jsonl file itself)."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / ANNOTATIONS
    if not path.is_file():
        raise FileNotFoundError(f"no SlideVQA annotations at {path} (see dataset/download.sh slide)")
    return path


def slide_paths(row: Row) -> list[Path]:
    """The files of the slides the model sees (the deck's first :data:`MAX_PAGES`): the release's layout, or, for
    a copy whose ``image_urls`` are local paths instead of URLs, those paths (absolute or under the root)."""
    root = Path(row["_root"])
    folder = root / "images" / SPLIT / row["deck_name"]
    paths = []
    for url in row["image_urls"][:MAX_PAGES]:
        path = folder / PurePosixPath(str(url).split("?")[0]).name
        if not path.is_file() and "://" not in str(url) and (root / url).is_file():
            path = root / url  # an absolute path stays itself under the join
        paths.append(path)
    return paths


def load_rows(source: str) -> list[dict]:
    path = annotation_file(source)
    root = path.parents[2]  # <root>/annotations/qa/dev.jsonl
    rows, missing = [], 0
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not JSON: {err}") from None
            absent = [key for key in REQUIRED if key not in record]
            if absent:
                raise ValueError(f"{path}:{number}: record lacks {absent}; is this SlideVQA's qa jsonl?")
            row = {**record, "_root": str(root)}
            if all(file.is_file() for file in slide_paths(row)):
                rows.append(row)
            else:
                missing += 1
    if missing:
        logger.warning("slide: skipped %d question(s) whose slide images are missing under %s", missing,
                       root / "images" / SPLIT)
    if not rows:
        raise FileNotFoundError(f"no SlideVQA question in {path} has its slide images under "
                                f"{root / 'images' / SPLIT} ({missing} skipped)")
    return rows


def row_id(row: Row, index: int) -> str:
    # The release numbers its questions (qa_id); a copy without it is identified by its line order.
    return str(row["qa_id"]) if "qa_id" in row else f"slide_{index}"


def keep(row: Row) -> bool:
    pages = row["evidence_pages"]
    return bool(row["image_urls"]) and (not pages or int(pages[0]) <= MAX_PAGES)


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    where = f"slide {row_id(row, index)}"
    pages = [open_image(path, where=where) for path in slide_paths(row)]
    evidence = [int(page) - 1 for page in row["evidence_pages"] if int(page) <= len(pages)]  # 0-based, shown
    return Example(id=row_id(row, index), question=row["question"], golds=[str(row["answer"])], pages=pages,
                   instruction=INSTRUCTION, meta={"deck_name": row["deck_name"], "evidence_pages": evidence})


TASK = Task("slide", "image", TEXT_QA_METRICS, None, load_rows, row_id, to_example, keep=keep,
            local_default="SlideVQA",
            description=f"SlideVQA dev: the deck's first {MAX_PAGES} slides, short answer, EM/F1")
