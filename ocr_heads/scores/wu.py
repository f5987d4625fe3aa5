"""Import Wu et al.'s released retrieval-head scores into this project's score-file layout.

    python -m ocr_heads.scores.wu head_score/Qwen2-7B-Instruct.json --out scores/text/Qwen2-7B-Instruct_te.json

Wu et al. ("Retrieval Head Mechanistically Explains Long-Context Factuality", 2024) release one JSON per model,
``{"<layer>-<head>": [score per needle test, ...], ...}`` with 0-based layers and heads. The import renames each
key to ``l<layer>_h<head>`` and keeps every value as it is, so the project's means (plain ``sum / len``) are the
means of their lists. It writes the three files every score has (:func:`ocr_heads.scores.files.save_scores`): the
lists, the ``_mean`` companion and a sidecar of kind ``retrieval`` that names the source file and its sha256.

Their scores are per needle test (hits / answer tokens, Wu et al.'s rule), not per answer-token event as ours
are, so a head's "activation frequency" in the imported file is a fraction of tests, not of events.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

from ocr_heads.core.commandline import Parser, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import UserError
from ocr_heads.core.io import read_json
from ocr_heads.core.paths import model_name
from ocr_heads.scores.files import companion_paths, save_scores, validate_per_head

logger = logging.getLogger(__name__)

WU_KEY = re.compile(r"^(\d+)-(\d+)$")
SOURCE_FORMAT = "Wu et al. 2024 retrieval-head scores ({'<layer>-<head>': [scores]})"


def convert_keys(wu: Any, source: str, shape: tuple[int, int] | None = None) -> dict[str, list]:
    """``{"L-H": values}`` -> ``{"lL_hH": values}`` (values untouched), in the file's order.

    UserError naming the first key that is not ``<layer>-<head>``, or (with ``shape`` = (layers, heads)) the first
    head the target model lacks."""
    if not isinstance(wu, dict) or not wu:
        raise UserError(f"{source}: expected Wu et al.'s JSON object {{'<layer>-<head>': [scores], ...}}, got "
                        f"{'an empty object' if isinstance(wu, dict) else type(wu).__name__}")
    converted = {}
    for key, values in wu.items():
        match = WU_KEY.match(key)
        if match is None:
            raise UserError(f"{source}: key {key!r} is not '<layer>-<head>' (e.g. '13-7'), as Wu et al.'s files "
                            "name heads")
        layer, head = int(match.group(1)), int(match.group(2))
        if shape is not None and (layer >= shape[0] or head >= shape[1]):
            raise UserError(f"{source}: key {key!r} names layer {layer} head {head}, which a model of {shape[0]} "
                            f"layers x {shape[1]} heads lacks")
        converted[f"l{layer}_h{head}"] = values
    return converted


def model_shape(model_id: str) -> tuple[int, int]:
    """(decoder layers, attention heads) from a checkpoint's ``config.json`` (flat, ``text_config`` or InternVL2's
    ``llm_config``), read as JSON: no model code."""
    local = Path(model_id) / "config.json"
    if local.is_file():
        path = local
    else:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(model_id, "config.json"))
        except Exception as err:  # noqa: BLE001 (any hub failure: offline, unknown id, no access)
            raise UserError(f"--model_id {model_id}: no local config.json and the hub gave none "
                            f"({type(err).__name__}); pass --layers and --heads instead") from None
    config = json.loads(path.read_text())
    for block in (config, config.get("text_config") or {}, config.get("llm_config") or {}):
        if "num_hidden_layers" in block and "num_attention_heads" in block:
            return int(block["num_hidden_layers"]), int(block["num_attention_heads"])
    raise UserError(f"{path}: names no num_hidden_layers / num_attention_heads")


def import_wu(source: str | Path, out: str | Path, model: str | None = None,
              shape: tuple[int, int] | None = None) -> Path:
    """Write ``out`` (+ ``_mean`` and ``.meta.json``) from Wu et al.'s file ``source``; returns ``out``.

    ``model`` names the scores (default: the source's file name, as Wu et al. name their files after the model).
    An ``out`` already holding an import of another file is refused; the same file again rewrites the same bytes."""
    source, out = Path(source), Path(out)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    per_head = convert_keys(read_json(source), str(source), shape)
    sidecar, _ = companion_paths(out)
    if sidecar.is_file():
        previous = read_json(sidecar).get("source", {})
        if previous.get("sha256") != digest:
            raise UserError(f"{out} holds other scores ({previous.get('file', 'not an import')}); nothing was written: "
                            "pass another --out to keep both")
    try:
        _, num_layers, num_heads = validate_per_head(per_head, str(source))
    except ValueError as err:
        raise UserError(str(err)) from None
    if shape is not None and (num_layers, num_heads) != shape:
        raise UserError(f"{source}: covers {num_layers} layers x {num_heads} heads, the model has {shape[0]} x "
                        f"{shape[1]}")
    meta = {"kind": "retrieval", "model": model or source.stem, "num_layers": num_layers, "num_heads": num_heads,
            "n_lists": len(per_head), "values_per_head": sorted({len(v) for v in per_head.values()}),
            "source": {"format": SOURCE_FORMAT, "file": source.name, "sha256": digest,
                       "imported_by": "ocr_heads.scores.wu"},
            "note": "imported from Wu et al.'s release: values are per needle test (their rule), not per answer-token "
                    "event"}
    save_scores(out, per_head, meta)
    logger.info("%s -> %s (%d layers x %d heads, kind retrieval)", source, out, num_layers, num_heads)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Import one of Wu et al.'s released retrieval-head score files ({'<layer>-<head>': [scores]}) "
        "into this project's score-file layout (l<layer>_h<head> keys, values unchanged), so the report and step3 "
        "read it like a step2_text_retrieval_head.py output.",
        epilog="Reads WU.json. Writes OUT.json (the lists), OUT_mean.json (their means) and OUT.meta.json (kind "
        "retrieval, the model's name, layers x heads, the source file's name and sha256). A key that is not "
        "<layer>-<head>, or a head the model lacks (--model_id or --layers/--heads), is one error line naming it.",
    )
    parser.add_argument("wu_file", type=Path, metavar="WU.json", help="Wu et al.'s score file")
    parser.add_argument("--out", type=Path, required=True, help="the score file to write (OUT.json)")
    parser.add_argument("--model", default=None,
                        help="the model's name in the sidecar (default: --model_id's name, else WU.json's file name)")
    parser.add_argument("--model_id", default=None,
                        help="the model the scores belong to (local dir or hub id): its config.json gives the "
                        "layers x heads every key must fit")
    parser.add_argument("--layers", type=positive_int, default=None, help="decoder layers (instead of --model_id)")
    parser.add_argument("--heads", type=positive_int, default=None, help="attention heads per layer (with --layers)")
    args = parser.parse_args(argv)
    if (args.layers is None) != (args.heads is None):
        parser.error("--layers and --heads go together")
    if args.model_id is not None and args.layers is not None:
        parser.error("give --model_id or --layers/--heads, not both")
    setup_logging()

    def run() -> None:
        shape = model_shape(args.model_id) if args.model_id else (
            (args.layers, args.heads) if args.layers else None)
        model = args.model or (model_name(args.model_id) if args.model_id else None)
        print(import_wu(args.wu_file, args.out, model, shape))

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
