"""The shared command line of the step1 generators (passkey and needle-in-a-haystack)."""

from __future__ import annotations

import argparse
import random
import string
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ocr_heads.core import hub
from ocr_heads.core.commandline import Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import UserError
from ocr_heads.core.io import read_jsonl
from ocr_heads.core.provenance import STEP1_SETTINGS, claim
from ocr_heads.data import haystack
from ocr_heads.data.fonts import font_settings, resolve_font
from ocr_heads.data.haystack import Needle
from ocr_heads.data.render import PageStyle
from ocr_heads.data.samples import SAMPLES_FILE, generate_from_contexts, generate_samples

NeedleMaker = Callable[[random.Random], Needle]
T = TypeVar("T")

# Where step1 writes when --out is not given, and so where step2 and exp_case read by default: the
# authors' scripts take no paths (they write fixed folders), so their bare commands must chain here too.
DEFAULT_OUT = {"passkey": Path("dataset/passkey"), "niah": Path("dataset/niah"), "chars": Path("dataset/chars")}


def build_parser(task: str, description: str) -> argparse.ArgumentParser:
    parser = Parser(
        description=description,
        epilog=(
            f"Writes OUT/{SAMPLES_FILE} (one JSON record per sample: id, question, answer, context, "
            "pages [paths relative to OUT], evidence {page index: [[x0,y0,x1,y1] per answer character]}, "
            "occurrences, needle_span), the page images OUT/<id>/page_<k>.png and OUT/step1.json (the settings "
            "that define the samples). Pages: 50 characters a line, 15 lines a page, DejaVu Sans Mono (or --font). "
            "Rerunning with the same settings keeps samples already written (and adds more for a larger --n or new "
            "--lengths); a rerun with another --seed, --source, --digits, --single-char or --font into the same "
            "--out is refused."
        ),
    )
    chars = " (--single-char: " + str(DEFAULT_OUT["chars"]) + ")" if task == "passkey" else ""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output directory (default {DEFAULT_OUT[task]}{chars}, where step2 and exp_case "
                        "read by default)")
    parser.add_argument("--n", type=positive_int, default=150,
                        help=count_help("per context length (per character with --single-char)", 150))
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192],
                        help="context lengths in tokens, ~4 characters each (default 1024 2048 4096 8192)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--source", choices=["embedded", "hf"], default="embedded",
                        help="embedded: offline haystack from CPython's help text and seeded needles "
                        "(default); hf: the paper's Hugging Face dataset (needs network)")
    parser.add_argument("--font", default=None, metavar="PATH_OR_NAME",
                        help="page font: a .ttf/.otf file or an installed family name (e.g. 'Liberation Sans', "
                        "Arial's metrics, as the authors' arial.ttf; Debian: apt-get install fonts-liberation). "
                        "Default: DejaVu Sans Mono (shipped with matplotlib). Its file name and sha256 go into "
                        "OUT/step1.json")
    if task == "passkey":
        parser.add_argument("--single-char", action="store_true",
                            help="case study: single-character passkeys over 0-9a-z, N haystacks per character")
        parser.add_argument("--digits", type=int, default=5, help="passkey length in digits (default 5)")
    return parser


def settings(task: str, args: argparse.Namespace) -> dict:
    """What defines the samples of a step1 folder (--n and --lengths only add samples, so they may change)."""
    record = {"task": task, "seed": args.seed, "source": args.source}
    if task == "passkey":
        record.update(digits=args.digits, single_char=bool(args.single_char))
    if getattr(args, "font", None) is not None:  # only when given: default folders keep their step1.json
        record.update(font_settings(resolve_font(args.font)))
    return record


def page_style(args: argparse.Namespace) -> PageStyle | None:
    """The pages' style: None (the defaults) unless --font is given."""
    font = getattr(args, "font", None)
    return None if font is None else PageStyle(font_path=resolve_font(font))


def _check_legacy(out: Path, wanted: dict) -> None:
    """A folder written before step1.json existed: compare what its records say."""
    first = next(iter(read_jsonl(out / SAMPLES_FILE)), None)
    if first is None:
        return
    found = {key: first[key] for key in ("seed", "source") if key in first}
    if wanted["task"] == "passkey" and not wanted["single_char"] and str(first.get("id", "")).startswith("passkey_"):
        found["digits"] = len(str(first.get("answer", "")))
    changed = [f"{key}={value!r} (now {wanted[key]!r})" for key, value in found.items() if wanted[key] != value]
    if changed:
        raise UserError(f"{out} holds samples made with other settings: {'; '.join(changed)}. Nothing was written; "
                        "use another --out")


def output_dir(task: str, args: argparse.Namespace) -> Path:
    """--out, or the default folder of this generator."""
    if args.out is not None:
        return args.out
    return DEFAULT_OUT["chars" if getattr(args, "single_char", False) else task]


def run(task: str, args: argparse.Namespace) -> Path:
    setup_logging()
    args.out = output_dir(task, args)
    if any(length < 16 for length in args.lengths):
        raise UserError("--lengths must be at least 16 tokens")
    out = Path(args.out)
    wanted = settings(task, args)
    if not (out / STEP1_SETTINGS).is_file() and (out / SAMPLES_FILE).is_file():
        _check_legacy(out, wanted)
    claim(out / STEP1_SETTINGS, wanted, str(out), "use another --out to keep both")
    if args.source == "hf" and task == "passkey" and not getattr(args, "single_char", False):
        # The hub rows come with their own needles: render them as they are.
        contexts = from_hub(lambda: {length: haystack.hf_passkey_contexts(length, args.n, args.seed)
                                     for length in args.lengths})
        return generate_from_contexts(args.out, task, contexts, args.seed, "hf", page_style(args))
    corpus, make_needle = _source(task, args)
    if getattr(args, "single_char", False):
        path = None
        for char in string.digits + string.ascii_lowercase:
            path = generate_samples(args.out, f"char_{char}", args.n, args.lengths, args.seed, corpus,
                                    lambda _rng, c=char: haystack.single_char_needle(c), page_style(args),
                                    source=args.source)
        return path
    return generate_samples(args.out, task, args.n, args.lengths, args.seed, corpus, make_needle, page_style(args),
                            source=args.source)


def from_hub(load: Callable[[], T]) -> T:
    """``load()`` of a hub dataset; without network, the local cache only, and one ``error:`` line if it is
    not there (not a minute of retries and a traceback)."""
    if hub.reachable():
        return load()
    hub.go_offline()
    try:
        return load()
    except OSError as err:  # datasets' "couldn't reach" (ConnectionError) and "not found" are OSErrors
        raise UserError(f"--source hf: the Hugging Face hub is unreachable ({hub.why_unreachable()}) and the "
                        f"dataset is not in the local cache ({type(err).__name__}); use --source embedded (offline "
                        "haystacks, the default) or run once on a connected machine to fill the cache") from None


def _source(task: str, args: argparse.Namespace) -> tuple[str, NeedleMaker]:
    if args.source == "embedded":
        corpus = haystack.embedded_corpus()
        if task == "passkey":
            return corpus, lambda rng: haystack.passkey_needle(rng, args.digits)
        return corpus, haystack.niah_needle
    corpus, needles = from_hub(lambda: haystack.hf_niah_source(args.seed))
    if task == "passkey":  # single-character case study: NeedleBench's plain haystack, our needles
        return corpus, lambda rng: haystack.passkey_needle(rng, args.digits)
    return corpus, lambda rng: rng.choice(needles)


# The --help description of each task's command (step1_passkey.py, step1_niah.py, ocr-heads step1-...).
DESCRIPTIONS = {"passkey": "Generate passkey-retrieval samples rendered as page images.",
                "niah": "Generate needle-in-a-haystack samples rendered as page images."}


def main(task: str, description: str | None = None, argv: list[str] | None = None) -> int:
    """The command line of step1_passkey.py / step1_niah.py (user mistakes: one ``error:`` line, exit 2)."""
    args = build_parser(task, description or DESCRIPTIONS[task]).parse_args(argv)
    return run_cli(lambda: run(task, args) and 0)
