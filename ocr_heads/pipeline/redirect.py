"""exp_redirect.py: can the OCR heads be pointed at another character? (Rules: :mod:`ocr_heads.experiments.redirect`.)

Teacher forcing, not generation: each event is one forward over the prompt plus the gold answer's first ``i``
characters (tokenized as the answer is written), so every head set is measured on the very same prefix and a
redirect at character ``i`` cannot be confounded by an earlier redirected character. The edit acts on the
producing row only (the forward's last row, the one that writes character ``i``); every other row is unedited.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
from pathlib import Path

import numpy as np
import torch

from ocr_heads.attention.reweighting import KeySet, Reweight, Rows, reweighted_heads
from ocr_heads.core.commandline import Parser, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import UserError
from ocr_heads.core.heads import check_heads_exist
from ocr_heads.core.io import ensure_writable_dir, write_text_atomic
from ocr_heads.core.provenance import MODEL_KEY, claim, data_fingerprint, model_fingerprint, model_note
from ocr_heads.core.runner import collect, run_samples
from ocr_heads.data.samples import Sample, load_samples
from ocr_heads.experiments.redirect import CSV_COLUMNS, OUTCOMES, blank_tiles, outcome, partner, rates
from ocr_heads.experiments.regions import character_positions
from ocr_heads.models import ModelAdapter, ModelInputs, load_adapter
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.scores.selection import choose_heads, load_head_ranking

logger = logging.getLogger(__name__)

DEFAULT_K = (2, 4)
DEFAULT_ALPHA = (0.5, 1.0)
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_N = 20
CSV_NAME = "redirect.csv"
LOG_NAME = "redirect.samples.jsonl"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description="Redirect experiment: while the model writes passkey character i (teacher-forced), the "
                    "top-k OCR heads' producing row moves a share alpha of its attention on character i's tiles onto "
                    "the tiles of another character j of the page. Rates of steered (output j), kept (output i) and "
                    "other, against k random heads (--seeds) and against redirecting the top heads to a blank "
                    "region. Only characters the unedited model writes right are counted.",
                    epilog=f"reads DIR/samples.jsonl and its pages (step1 or `python -m ocr_heads.toy.data` output); "
                    f"writes OUT/{CSV_NAME} (columns {', '.join(CSV_COLUMNS)}; rates sum to 1 per row), "
                    f"OUT/{LOG_NAME} (per-sample events; a rerun resumes), OUT/redirect.config.json (what made it: "
                    "a rerun with other settings is refused) and OUT/redirect.png")
    add_model_args(parser)
    parser.add_argument("--heads", type=Path, required=True, help="OCR head list (step3 output, plain list or scores)")
    parser.add_argument("--data", type=Path, required=True, help="step1 / toy data directory (samples.jsonl + pages)")
    parser.add_argument("--k", type=positive_int, nargs="+", default=list(DEFAULT_K),
                        help=f"head counts of the grid (default {' '.join(map(str, DEFAULT_K))})")
    parser.add_argument("--alpha", type=float, nargs="+", default=list(DEFAULT_ALPHA),
                        help=f"redirect strengths in [0, 1] (default {' '.join(map(str, DEFAULT_ALPHA))})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                        help=f"seeds of the random head sets (default {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_N, help=f"samples (default {DEFAULT_N})")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    return parser


def settings(ranking: list[str], args: argparse.Namespace, adapter: ModelAdapter) -> dict[str, list[str]]:
    """Every (head set, k, alpha, seed) of the grid -> its heads; keyed ``head_set|k|alpha|seed``."""
    shape = adapter.shape
    grid: dict[str, list[str]] = {}
    for k in args.k:
        top = choose_heads("top", k, ranking, shape.num_layers, shape.num_heads, 0, adapter.scoreable_layers)
        for alpha in args.alpha:
            grid[f"top|{k}|{alpha:g}|"] = top
            grid[f"blank|{k}|{alpha:g}|"] = top
            for seed in args.seeds:
                grid[f"random|{k}|{alpha:g}|{seed}"] = choose_heads("random", k, ranking, shape.num_layers,
                                                                     shape.num_heads, seed, adapter.scoreable_layers)
    return grid


def with_prefix(inputs: ModelInputs, token_ids: list[int]) -> dict[str, torch.Tensor]:
    """The prompt's tensors with ``token_ids`` appended as answer text (attention 1, token types 0)."""
    tensors = dict(inputs.tensors)
    if not token_ids:
        return tensors
    tail = torch.tensor([token_ids], dtype=inputs.input_ids.dtype)
    for name in ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids"):
        if name in tensors:
            extra = tail if name == "input_ids" else torch.full_like(tail, int(name == "attention_mask"))
            tensors[name] = torch.cat([tensors[name], extra.to(tensors[name].dtype)], dim=1)
    return tensors


def next_text(adapter: ModelAdapter, tensors: dict[str, torch.Tensor]) -> str:
    """What the model writes next (greedy, one token), decoded."""
    with torch.no_grad():
        logits = adapter.model(**{k: v.to(adapter.device) for k, v in tensors.items()}, use_cache=False).logits
    return adapter.decode([int(logits[0, -1].argmax())])


def sample_events(adapter: ModelAdapter, sample: Sample, grid: dict[str, list[str]]) -> dict:
    """One sample's events: per answer character i with a partner j, the unedited output and every setting's
    outcome (only for characters the unedited model writes right)."""
    answer = sample.answer
    pages = sample.load_pages()
    inputs = adapter.image_inputs(pages, sample.question)
    on_pages = [(int(page), boxes) for page, boxes in sample.evidence.items()]
    if len(on_pages) != 1 or len(on_pages[0][1]) != len(answer):
        return {"events": [], "skipped": "the answer is not drawn whole on one page"}
    page, boxes = on_pages[0]
    tiles = [character_positions(inputs, page, [box]) for box in boxes]
    runs = [run for run in inputs.image_tokens if run.page == page]
    grey = np.asarray(pages[page].convert("L"))
    events = []
    for i in range(len(answer)):
        j = partner(answer, i, [bool(t) for t in tiles])
        if not tiles[i] or j is None:
            continue
        blank = []
        for run in runs:  # the blank control: ink-free tiles of the same page, as many as j has
            near = [p - run.start for p in tiles[j] if run.start <= p < run.start + run.count]
            blank += [run.start + index for index in blank_tiles(grey, run.tile_boxes, near, len(tiles[j]))]
        blank = blank[: len(tiles[j])]
        tensors = with_prefix(inputs, adapter.tokenizer.encode(answer[:i], add_special_tokens=False))
        unedited = next_text(adapter, tensors)
        event = {"i": i, "j": j, "unedited": unedited, "outcomes": {}}
        if outcome(unedited, answer[i], answer[j]) == "kept":
            for key, heads in grid.items():
                head_set, _, alpha, _ = key.split("|")
                target = blank if head_set == "blank" else tiles[j]
                edit = Reweight("redirect", alpha=float(alpha))
                with reweighted_heads(adapter, heads, edit, KeySet.shared(tiles[i]), KeySet.shared(target),
                                      Rows.PRODUCING):
                    event["outcomes"][key] = outcome(next_text(adapter, tensors), answer[i], answer[j])
        events.append(event)
    return {"events": events}


NO_EVENTS = "no event: the unedited model wrote none of these characters right, so the rates are undefined"


def result_rows(records: list[dict], grid: dict[str, list[str]], model: str, note: str) -> list[dict]:
    rows = []
    for key in grid:
        head_set, k, alpha, seed = key.split("|")
        found = [event["outcomes"][key] for record in records for event in record["events"]
                 if key in event["outcomes"]]
        shares = {name: f"{value:.6f}" for name, value in rates(found).items()}
        row_note = note
        if not found:  # no rate without events: empty cells, not zeros that read as a result
            shares = dict.fromkeys(OUTCOMES, "")
            row_note = "; ".join(filter(None, [NO_EVENTS, note]))
            logger.warning("redirect %s k=%s alpha=%s seed=%s: %s", head_set, k, alpha, seed or "-", NO_EVENTS)
        rows.append({"model": model, "head_set": head_set, "k": k, "alpha": alpha, "seed": seed, "n": len(found),
                     **shares, "note": row_note})
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def plot(rows: list[dict], path: Path) -> None:
    """Steered rate against alpha, one panel per k: top heads, random heads (mean, min-max over seeds), blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = sorted({int(row["k"]) for row in rows})
    figure, axes = plt.subplots(1, len(ks), figsize=(4 * len(ks), 3.2), squeeze=False)
    for axis, k in zip(axes[0], ks, strict=True):
        for head_set, colour in (("top", "tab:red"), ("random", "tab:grey"), ("blank", "tab:blue")):
            chosen = [row for row in rows if int(row["k"]) == k and row["head_set"] == head_set and row["steered"]]
            alphas = sorted({float(row["alpha"]) for row in chosen})
            values = [[float(row["steered"]) for row in chosen if float(row["alpha"]) == a] for a in alphas]
            axis.plot(alphas, [np.mean(v) for v in values], marker="o", color=colour, label=head_set)
            if head_set == "random":
                axis.fill_between(alphas, [min(v) for v in values], [max(v) for v in values], color=colour, alpha=0.2)
        axis.set(title=f"k = {k}", xlabel="alpha", ylabel="steered rate", ylim=(-0.02, 1.02))
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def check_edit_supported(adapter: ModelAdapter, sample: Sample, heads: list[str]) -> None:
    """One edited forward before the run: a model the edit cannot reproduce exactly (a binding sliding window,
    logit soft-capping) is refused with one error line, instead of every event failing on its own."""
    inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    try:
        with reweighted_heads(adapter, heads, Reweight("redirect"), KeySet.shared([]), None, Rows.PRODUCING):
            next_text(adapter, inputs.tensors)
    except ValueError as err:
        raise UserError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_cli(run, args)


def run(args: argparse.Namespace) -> int:
    bad = [alpha for alpha in args.alpha if not 0.0 <= alpha <= 1.0]
    if bad:
        raise UserError(f"--alpha must be in [0, 1], got {bad[0]:g}")
    ranking = load_head_ranking(args.heads)
    samples = load_samples(args.data, limit=args.n)
    if not samples:
        raise UserError(f"{args.data} holds no samples")
    ensure_writable_dir(args.out)
    adapter = load_adapter(args.model_id, **adapter_kwargs(args))
    shape = adapter.shape
    check_heads_exist(ranking, shape.num_layers, shape.num_heads)
    grid = settings(ranking, args, adapter)
    args.out.mkdir(parents=True, exist_ok=True)
    identity = {MODEL_KEY: model_fingerprint(args.model_id), "protocol": adapter.protocol, "heads": ranking,
                "k": args.k, "alpha": args.alpha, "seeds": args.seeds,
                "data_fingerprint": data_fingerprint(str(args.data))}
    claim(args.out / "redirect.config.json", identity, str(args.out / "redirect"), "use another --out",
          recorded={"model_id": args.model_id, "data": str(args.data)})
    check_edit_supported(adapter, samples[0], next(iter(grid.values())))
    log = args.out / LOG_NAME
    run_samples(samples, lambda sample: sample.id, lambda sample: sample_events(adapter, sample, grid), log, "redirect")
    records, failed = collect([log], [sample.id for sample in samples])
    if not records:  # e.g. a binding sliding window or soft-capping, refused by the edit: say why, in one line
        first = failed[0]["error"] if failed else "no sample ran"
        raise UserError(f"every sample failed (first: {first}; see {log})")
    rows = result_rows(records, grid, adapter.name, model_note(adapter.model.config, args.model_id))
    write_csv(args.out / CSV_NAME, rows)
    plot(rows, args.out / "redirect.png")
    events = sum(len(record["events"]) for record in records)
    logger.info("redirect: %d samples (%d failed), %d character events; wrote %s", len(records), len(failed), events,
                args.out / CSV_NAME)
    return 0
