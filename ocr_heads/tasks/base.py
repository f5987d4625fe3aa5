"""What every evaluation task shares: the Example it yields, the Task record, and the loaders.

A task (one module per dataset, shaped like an lmms-eval task) says how to load its rows, how to
turn one row into an ``Example`` (pages and/or context, question, golds) and which metrics score
it. The model adapter turns ``example.pages`` + ``example.prompt`` into model inputs; tasks never
see a model.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import logging
import os
import random
import shutil
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from ocr_heads.tasks.metrics import METRICS, score_all

logger = logging.getLogger(__name__)

# Where dataset/download.sh puts raw files; a task prefers a copy here over the network.
DATASET_DIR = Path(__file__).resolve().parents[2] / "dataset"
DEFAULT_N = 600
# Shared by the text QA tasks (nq, hotpot): a short, extractive answer.
TEXT_QA_INSTRUCTION = (
    "Answer the question from the evidence above. Reply with only the answer, a word or short phrase."
)

Row = Mapping[str, Any]


@dataclass
class Example:
    """One evaluation item, model-agnostic.

    ``question`` is the dataset's question; ``instruction`` the task's answer-format line;
    ``context`` the text the answer must be read from (text tasks); ``pages`` the images (image
    tasks, RGB, in reading order). ``prompt`` is the whole text turn the model gets after the
    pages: it already contains ``context``, so an adapter needs only ``pages`` and ``prompt``.
    ``meta`` holds what analysis may want (evidence page, passage titles, ...).
    """

    id: str
    question: str
    golds: list[str]
    pages: list[Image.Image] | None = None
    context: str | None = None
    instruction: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.golds or not all(isinstance(gold, str) for gold in self.golds):
            raise ValueError(f"example {self.id}: golds must be a non-empty list of strings: {self.golds!r}")
        if self.pages is not None and not self.pages:
            raise ValueError(f"example {self.id}: pages is an empty list (use None for a text-only example)")

    @property
    def prompt(self) -> str:
        # Image tasks: "{question}\n{instruction}", the usual DocVQA prompt for these models;
        # after a long text context the question gets a label so it stands apart from the evidence.
        question = f"Question: {self.question}" if self.context else self.question
        if self.instruction:
            question = f"{question}\n{self.instruction}"
        return f"{self.context}\n\n{question}" if self.context else question

    @property
    def num_pages(self) -> int:
        return len(self.pages) if self.pages else 0


@dataclass(frozen=True)
class Task:
    """A dataset as the experiments see it: rows in, Examples out, metrics by name.

    ``load_rows(source)`` returns an indexable sequence of rows; ``row_id(row, index)`` a stable id;
    ``keep(row)`` filters rows that cannot be used (they do not count towards ``n``);
    ``to_example(row, index, rows, rng)`` builds the Example (``rows`` for tasks that draw
    distractors from other rows, ``rng`` seeded per example).
    """

    name: str
    modality: Literal["image", "text"]
    metrics: tuple[str, ...]
    default_source: str | None
    load_rows: Callable[[str], Sequence[Row]]
    row_id: Callable[[Row, int], str]
    to_example: Callable[[Row, int, Sequence[Row], random.Random], Example]
    keep: Callable[[Row], bool] | None = None
    local_default: str | None = None  # path under dataset/ that download.sh fills
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [name for name in self.metrics if name not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name}: unknown metrics {unknown}")

    def resolve_source(self, source: str | os.PathLike | None = None) -> str:
        """The explicit source, else the local copy under dataset/, else the hub id / URL."""
        if source is not None:
            return str(source)
        if self.local_default is not None and (DATASET_DIR / self.local_default).exists():
            return str(DATASET_DIR / self.local_default)
        if self.default_source is None:
            raise ValueError(f"task {self.name} has no default source: pass one (see --help)")
        return self.default_source

    def rows(self, source: str | os.PathLike | None = None) -> Sequence[Row]:
        return self.load_rows(self.resolve_source(source))

    def examples(
        self,
        source: str | os.PathLike | None = None,
        n: int | None = DEFAULT_N,
        seed: int = 0,
        skip_ids: Collection[str] = (),
    ) -> Iterator[Example]:
        """Yield Examples for the first ``n`` usable rows, in dataset order.

        Rows ``keep`` rejects are passed over and do not count. Rows whose id is in ``skip_ids``
        (finished in an earlier run) count towards ``n`` but are not built, so a resumed run
        covers the same rows without decoding their images again. Each example draws its random
        choices from its own generator seeded by (task, seed, id), so its context is the same
        whatever ``n``, shard or resume point. The rows load here, so a bad source fails at the
        call, not at the first ``next()``.
        """
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0 or None, got {n}")
        return self._iter_examples(self.rows(source), n, seed, skip_ids)

    def _iter_examples(
        self, rows: Sequence[Row], n: int | None, seed: int, skip_ids: Collection[str]
    ) -> Iterator[Example]:
        taken = rejected = 0
        for index in range(len(rows)):
            if n is not None and taken >= n:
                break
            row = rows[index]
            if self.keep is not None and not self.keep(row):
                rejected += 1
                continue
            taken += 1
            example_id = self.row_id(row, index)
            if example_id in skip_ids:
                continue
            yield self.to_example(row, index, rows, example_rng(self.name, seed, example_id))
        if rejected:
            logger.info("%s: passed over %d rows that the task cannot use", self.name, rejected)
        if n is not None and taken < n:
            logger.warning("%s: only %d usable rows (asked for %d)", self.name, taken, n)

    def score(self, prediction: str, example: Example) -> dict[str, float]:
        return score_all(prediction, example.golds, self.metrics)


def example_rng(task: str, seed: int, example_id: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and machines.
    return random.Random(f"{task}:{seed}:{example_id}")


# ---------------------------------------------------------------- answers, passages, images


def parse_answers(value: Any, where: str = "row") -> list[str]:
    """Gold answers as a list of strings; MP-DocVQA stores them as a Python list literal in a string."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"{where}: answers {value!r} look like a list but do not parse") from err
        else:
            return [value]
    if isinstance(value, (list, tuple)) and value:
        return [str(answer) for answer in value]
    raise ValueError(f"{where}: expected a non-empty list of answers, got {value!r}")


@dataclass(frozen=True)
class Passage:
    title: str
    text: str
    is_evidence: bool


def format_passages(passages: Sequence[Passage]) -> str:
    """Number the passages as the model sees them: ``Evidence 1 (Title): text``, blank-line separated."""
    return "\n\n".join(f"Evidence {i} ({p.title}): {p.text}" for i, p in enumerate(passages, start=1))


def passages_meta(passages: Sequence[Passage]) -> dict[str, Any]:
    return {
        "titles": [p.title for p in passages],
        "evidence_positions": [i for i, p in enumerate(passages) if p.is_evidence],
    }


def open_image(value: Any, where: str = "row") -> Image.Image:
    """An RGB PIL image from what a dataset stores: a PIL image, ``{"bytes", "path"}`` or a path."""
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, Mapping):
        value = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value.get("path")
    if isinstance(value, (str, os.PathLike)):
        if not Path(value).is_file():
            raise FileNotFoundError(f"{where}: image file missing: {value}")
    elif not isinstance(value, io.BytesIO):
        raise ValueError(f"{where}: no image (got {type(value).__name__})")
    try:
        with Image.open(value) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{where}: cannot decode image: {err}") from err


# ---------------------------------------------------------------- loading


_HF_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json"}
_SPLIT_NAMES = ("train", "validation", "val", "dev", "test")


def _file_split(path: Path) -> str | None:
    """The split a data file belongs to by hub naming (``validation-00000-of-00003.parquet``)."""
    for part in [path.stem, *(parent.name for parent in path.parents)]:
        for split in _SPLIT_NAMES:
            if part == split or part.startswith((f"{split}-", f"{split}_", f"{split}.")):
                return split
    return None


def _local_data_files(root: Path, config: str | None, split: str) -> tuple[str, list[str]]:
    """Pick the data files of one config and split from a hub snapshot or any folder of files."""
    if config and (root / config).is_dir():
        root = root / config  # lmms-lab/DocVQA keeps one folder per config
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _HF_FILE_BUILDERS)
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not files:
        raise FileNotFoundError(f"no .parquet/.arrow/.json/.jsonl data files under {root}")
    split_files = [p for p in files if _file_split(p.relative_to(root)) == split]
    if not split_files:
        if any(_file_split(p.relative_to(root)) for p in files):
            found = ", ".join(str(p.relative_to(root)) for p in files[:10])
            raise FileNotFoundError(f"no files of split {split!r} under {root} (found: {found})")
        split_files = files  # nothing is split-named: the folder is the split
    builders = {_HF_FILE_BUILDERS[p.suffix] for p in split_files}
    if len(builders) > 1:
        raise ValueError(f"mixed data file formats under {root}: {sorted(builders)}")
    return builders.pop(), [str(p) for p in split_files]


def load_hf_rows(
    source: str,
    split: str,
    config: str | None = None,
    required: Sequence[str] = (),
    image_columns: Callable[[Sequence[str]], list[str]] | None = None,
) -> Sequence[Row]:
    """A Hugging Face ``datasets`` split from a hub id, a ``save_to_disk`` folder, a folder of
    parquet/arrow/json files (a hub snapshot) or one such file.

    Image columns are left undecoded (``{"bytes", "path"}``): ``open_image`` decodes a row's
    pages only when its Example is built, so rows can be filtered and skipped cheaply.
    """
    import datasets  # heavy; only tasks that need it pay for the import

    path = Path(source).expanduser()
    if path.exists():
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise KeyError(f"{path} has splits {list(loaded)}, not {split!r}")
                loaded = loaded[split]
        elif path.is_dir():
            builder, files = _local_data_files(path, config, split)
            loaded = datasets.load_dataset(builder, data_files=files, split="train")
        else:
            suffix = path.suffix
            if suffix not in _HF_FILE_BUILDERS:
                known = ", ".join(_HF_FILE_BUILDERS)
                raise ValueError(f"{path}: unsupported file type {suffix!r} (use one of {known})")
            loaded = datasets.load_dataset(_HF_FILE_BUILDERS[suffix], data_files=[str(path)], split="train")
    else:
        if source.startswith((".", "/", "~")) or Path(source).suffix in _HF_FILE_BUILDERS:
            raise FileNotFoundError(f"no such file or directory: {source}")
        try:
            loaded = datasets.load_dataset(source, config, split=split)
        except (FileNotFoundError, ConnectionError) as err:
            raise FileNotFoundError(
                f"{source!r} is not a local path and could not be loaded from the Hugging Face hub "
                f"(offline? run dataset/download.sh on a connected machine): {err}"
            ) from err
    missing = [column for column in required if column not in loaded.column_names]
    if missing:
        raise ValueError(f"{source}: missing columns {missing} (has {loaded.column_names})")
    for column, feature in loaded.features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            loaded = loaded.cast_column(column, datasets.Image(decode=False))
    return loaded


def download(url: str, dest: Path) -> Path:
    """Fetch ``url`` to ``dest`` (gunzipping ``.gz``), via a temp file so a broken fetch leaves nothing."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"{dest} is missing and the machine is offline; run dataset/download.sh")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    logger.info("downloading %s -> %s", url, dest)
    with urllib.request.urlopen(url) as response, tmp.open("wb") as out:
        stream = gzip.GzipFile(fileobj=response) if url.endswith(".gz") else response
        shutil.copyfileobj(stream, out)
    tmp.replace(dest)
    return dest


def load_json_rows(source: str, local_default: str | None, required: Sequence[str]) -> list[dict]:
    """A JSON list of records from a file (``.json`` or ``.json.gz``), or from a URL fetched once
    into ``dataset/<local_default>``. Checks the first record has the ``required`` keys."""
    if source.startswith(("http://", "https://")):
        if local_default is None:
            raise ValueError(f"no local path to download {source} to")
        path = DATASET_DIR / local_default
        if not path.exists():
            download(source, path)
    else:
        path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty JSON list of records, got {type(data).__name__}")
    first = data[0]
    missing = [key for key in required if not isinstance(first, dict) or key not in first]
    if missing:
        raise ValueError(f"{path}: records lack {missing}; is this the right file?")
    return data
