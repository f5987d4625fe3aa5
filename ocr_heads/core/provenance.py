"""What made an output: fingerprints of inputs, a guard against mixing runs made differently, and the
caveats that travel with numbers made by a random or toy model.

Every output folder (step1 data, step2 scores, experiment runs) records the settings that made it in a
small JSON file. A rerun with the same settings resumes; a rerun with other settings into the same place
is refused with one line that says what differs, so nothing is silently mixed, overwritten or deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from ocr_heads.core.errors import UserError
from ocr_heads.core.io import read_json, write_json_atomic

logger = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
STEP1_SETTINGS = "step1.json"


def file_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def data_fingerprint(data_dir: str | Path | None) -> str | None:
    """Content fingerprint of a step1 folder: of its recorded settings (stable while --n grows), else of
    its samples.jsonl; None for anything else (a hub dataset, a download folder)."""
    if data_dir is None:
        return None
    folder = Path(data_dir)
    for name in (STEP1_SETTINGS, SAMPLES_FILE):
        if (folder / name).is_file():
            return file_fingerprint(folder / name)
    return None


# ---------------------------------------------------------------- which model: a fingerprint of what is loaded

MODEL_KEY = "model_fingerprint"  # the key a run's settings file pins the model by
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
INDEX_SUFFIX = ".index.json"  # model.safetensors.index.json: which tensor lives in which shard
WHOLE_FILE_LIMIT = 64 << 20  # files up to 64 MiB are hashed whole (the tiny and toy models)
CHUNKS, CHUNK_BYTES = 16, 64 << 10  # a larger file: 16 chunks of 64 KiB spread over its tensor data


def _safetensors_header_end(handle: Any, size: int) -> int:
    """Offset of the tensor data in a safetensors file (8-byte little-endian header length + JSON header);
    0 when the file does not look like one."""
    head = handle.read(8)
    if len(head) < 8:
        return 0
    length = int.from_bytes(head, "little")
    return 8 + length if 8 + length <= size else 0


def weights_file_digest(path: Path) -> str:
    """Size + header + sampled bytes of one weights file, cheap for a file of many GB.

    The safetensors header names every tensor, its dtype, shape and offset, but not its values: a
    fine-tune has the very same header. So beside the header, chunks spread evenly over the tensor data
    are hashed (every weight of a fine-tune or a perturbed copy differs, so any chunk tells them apart);
    small files are hashed whole.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        if size <= WHOLE_FILE_LIMIT:
            digest.update(handle.read())
            return digest.hexdigest()
        start = _safetensors_header_end(handle, size)
        handle.seek(0)
        digest.update(handle.read(start))
        step = max((size - start) // CHUNKS, 1)
        for offset in range(start, size, step):
            handle.seek(offset)
            digest.update(handle.read(CHUNK_BYTES))
    return digest.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """The fingerprint of a checkpoint folder: config.json's bytes, each index file's bytes and each weights
    file's :func:`weights_file_digest`, by file name (not by the folder's path: a copy is the same model)."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.name == "config.json" or path.name.endswith(INDEX_SUFFIX):
            part = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.name.endswith(WEIGHT_SUFFIXES):
            part = weights_file_digest(path)
        else:
            continue  # tokenizer, processor, model card: they do not make other weights
        digest.update(f"{path.name}\0{part}\n".encode())
    return digest.hexdigest()[:16]


def hub_snapshot(model_id: str, revision: str | None = None) -> Path | None:
    """The local HF cache's snapshot folder of a hub id (its name is the commit hash), or None; never asks
    the network."""
    from huggingface_hub import try_to_load_from_cache  # lazy: only hub ids need it

    try:
        found = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except ValueError:  # not a valid repo id
        return None
    return Path(found).parent if isinstance(found, str) else None


def model_fingerprint(model_id: str, revision: str | None = None) -> str:
    """What identifies a loaded model: its files' fingerprint (a local folder, or a hub id's snapshot in the
    local cache), else the hub id and the revision asked for. Call it after loading: a hub id's files are
    then in the cache."""
    if os.path.isdir(model_id):
        return folder_fingerprint(model_id)
    snapshot = hub_snapshot(model_id, revision)
    if snapshot is not None:
        return folder_fingerprint(snapshot)
    return f"{model_id}@{revision or 'unresolved'}"


def model_origin(model_id: str, revision: str | None = None) -> str:
    """A human-readable source of the model: the folder as given, or the hub id at its cached commit."""
    if os.path.isdir(model_id):
        return str(model_id)
    snapshot = hub_snapshot(model_id, revision)
    return f"{model_id}@{snapshot.name}" if snapshot is not None else model_id


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{key}={old.get(key)!r} (now {new.get(key)!r})" for key in keys if old.get(key) != new.get(key)]


def _source(record: dict[str, Any]) -> str:
    """Where a run's model came from, as its settings file says (the path or hub id given, else its name)."""
    return str(record.get("model_source") or record.get("model_id") or record.get("model") or "(unknown)")


def claim(path: Path, settings: dict[str, Any], what: str, remedy: str, recorded: dict[str, Any] | None = None,
          ) -> None:
    """Record ``settings`` at ``path``, or check that an earlier run recorded the same ones.

    ``what`` names the output ("dataset/passkey", "scores/image/M_fg"); ``remedy`` says how to keep both.
    ``recorded`` is stored beside the settings but never compared (e.g. the path the model was loaded from:
    a copy of the same model elsewhere is the same model). A settings file written before the model was
    fingerprinted has no ``model_fingerprint``: it is taken as unknown, not as different, and recorded now.
    """
    recorded = recorded or {}
    if not path.is_file():
        write_json_atomic(path, {**settings, **recorded})
        return
    previous = read_json(path)
    if not isinstance(previous, dict):
        raise UserError(f"{what} was made with other settings: (unreadable {path}). Nothing was written; {remedy}")
    legacy = MODEL_KEY in settings and MODEL_KEY not in previous
    # Older files compared the model's path too (e.g. model_id): that key is only recorded now.
    compared = {key: value for key, value in previous.items() if key not in recorded}
    if legacy:
        compared[MODEL_KEY] = settings[MODEL_KEY]
    if MODEL_KEY in settings and compared.get(MODEL_KEY) != settings[MODEL_KEY]:
        now = _source({**settings, **recorded})
        raise UserError(f"{what} holds the output of another model: {_source(previous)} (fingerprint "
                        f"{previous.get(MODEL_KEY)}), not {now} (fingerprint {settings[MODEL_KEY]}). Nothing was "
                        f"written; {remedy}")
    changed = differences(compared, settings)
    if changed:
        raise UserError(f"{what} was made with other settings: {'; '.join(changed)}. Nothing was written; "
                        f"{remedy}")
    if legacy:
        logger.info("%s: written before models were fingerprinted; the model is taken as the same one and its "
                    "fingerprint %s is recorded now", path, settings[MODEL_KEY])
        write_json_atomic(path, {**previous, MODEL_KEY: settings[MODEL_KEY], **recorded})


# Caveats: a note is stored next to every number made from a random or toy model (score meta, head lists,
# CSV rows) and repeated in every report header and figure caption built from it.
RANDOM_NOTE = "random weights: these numbers are noise, not findings"
TOY_NOTE = ("toy model: a 1.2M-parameter Qwen2-VL trained on 5-digit passkeys; it shows the pipeline works, "
            "not how real LVLMs read")


def model_note(config: Any, model_id: str) -> str:
    """The caveat for a loaded model ('' for a real checkpoint)."""
    if getattr(config, "ocr_heads_random_weights", False):
        return RANDOM_NOTE
    # The toy trainer (ocr_heads.toy.train) leaves its training log in the model folder.
    if (Path(model_id) / "training_log.json").is_file():
        return TOY_NOTE
    return ""


def note_of(meta: dict[str, Any] | None) -> str:
    """The caveat recorded in a score/result sidecar (key ``warning``; ``note`` in result rows)."""
    if not meta:
        return ""
    return str(meta.get("warning") or meta.get("note") or "")
