"""How a task's rows are fetched: Hugging Face ``datasets`` (hub id, ``save_to_disk`` folder, hub snapshot,
data file), JSON record files (local, or fetched once from a URL into ``dataset/``), and the page images
rows store. Every loader accepts a local path; tests never touch the network.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ocr_heads.data.images import open_rgb

logger = logging.getLogger(__name__)

Row = Mapping[str, Any]

# Where dataset/download.sh puts raw files; a task prefers a copy here over the network.
DATASET_DIR = Path(__file__).resolve().parents[2] / "dataset"


def local_copy(relative: str | None) -> Path | None:
    """``dataset/<relative>`` where download.sh (or an earlier fetch) put it, else None."""
    if relative is None or not (DATASET_DIR / relative).exists():
        return None
    return DATASET_DIR / relative


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
    return open_rgb(value, f"{where}: cannot decode image")


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
