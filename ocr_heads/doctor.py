"""First-run self-check of a model before a long job: one table, non-zero exit on any failure.

    python -m ocr_heads.doctor --model_id Qwen/Qwen2-VL-2B-Instruct

Rows (status ok / warn / FAIL / skip):
- ``token ids``: every special-token id the config names (image pad, vision start/end...) is that
  token's id in the tokenizer. FAIL on any disagreement: image tokens would be misplaced.
- ``load``: the adapter loads under the protocol. FAIL if it does not (the rows that need it skip).
- ``protocol``: skip for a text-only language model (Qwen2, InternLM2.5: it reads text, and the ``passkey`` and
  ``capture == eager`` rows ask it the sample's text as step2_text_retrieval_head.py does; ``token ids`` skips
  too). Otherwise the resolved settings and the image tokens of one rendered step1 passkey page. FAIL if
  the image processor gave a page another token count than the settings predict (e.g. a budget it
  does not apply) or the prompt's image-token ids disagree with the tile boxes.
- ``chat template``: warn when the checkpoint ships none (the adapter's fallback is used); FAIL when a
  special token of the rendered template does not encode as that one token id.
- ``passkey``: the page's passkey, asked as step2 asks it; the output is shown. ok if it contains the
  key. FAIL if the model misreads it under its own protocol (given, or declared by the checkpoint): a
  whole step2 run would then score zeros. A model marked random-weights (``ocr_heads_random_weights``)
  cannot read, so its miss is only a warning. FAIL if generation raises or yields nothing. ``--data
  DIR`` checks the first sample of a step1 folder instead of the rendered page (e.g. the toy's pages).
- ``capture == eager``: every recorded per-head argmax of that generation equals eager attention's
  (:func:`ocr_heads.attention.verify_against_eager`). FAIL on any real mismatch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ocr_heads.core.commandline import Parser
from ocr_heads.data import haystack
from ocr_heads.data.samples import Sample, generate_samples, load_samples
from ocr_heads.inspect import view_page
from ocr_heads.models import family_loader, load_adapter, model_type, registered_families
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.models.protocol import NATIVE, PAPER

if TYPE_CHECKING:
    from ocr_heads.models import ModelAdapter

logger = logging.getLogger(__name__)

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
MAX_NEW_TOKENS = 16
PAGE_LENGTH = 300  # step1 context length (tokens) of the test sample: one or two pages


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str


def check_token_ids(model_id: str) -> Check:
    """Config ids against the tokenizer, read straight from the files (before any adapter check runs)."""
    from transformers import AutoTokenizer

    name = "token ids"
    if registered_families()[model_type(model_id)].text_only:
        return Check(name, SKIP, "text-only language model: no image tokens to place")
    expected = getattr(family_loader(model_id), "CONFIG_TOKENS", {})
    if not expected:
        return Check(name, SKIP, "this family's config names no token ids (remote code: checked at conversion)")
    config = json.loads(_config_file(model_id).read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    agree, problems = [], []
    for key, token in expected.items():
        if key not in config:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        (agree if token_id == config[key] else problems).append(f"{key}={config[key]} vs {token} -> {token_id}")
    if problems:
        return Check(name, FAIL, "config and tokenizer disagree: " + "; ".join(problems))
    if not agree:
        return Check(name, FAIL, f"config.json names none of {sorted(expected)}")
    return Check(name, OK, ", ".join(agree))


def _config_file(model_id: str) -> Path:
    local = Path(model_id) / "config.json"
    if local.is_file():
        return local
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(model_id, "config.json"))


def render_sample(out_dir: Path) -> Sample:
    """One deterministic step1 passkey sample (pages rendered as step1 renders them)."""
    generate_samples(out_dir, "passkey", 1, [PAGE_LENGTH], 0, haystack.embedded_corpus(), haystack.passkey_needle)
    return load_samples(out_dir)[0]


def check_protocol(adapter: ModelAdapter, sample: Sample) -> Check:
    if not adapter.reads_images:
        return Check("protocol", SKIP, "text-only language model: it reads the sample's text, never its pages "
                                       "(step2_text_retrieval_head.py only)")
    described = ", ".join(f"{k}={v}" for k, v in adapter.settings().items())
    pages = sample.load_pages()
    counts = [view_page(adapter, page).image_tokens for page in pages]
    expected = [adapter.expected_tokens(page.size) for page in pages]
    detail = f"{described}; tokens per page {counts} ({view_page(adapter, pages[0]).layout})"
    if counts != expected:
        return Check("protocol", FAIL, f"{detail}: the settings predict {expected}")
    return Check("protocol", OK, detail)


def check_chat_template(adapter: ModelAdapter) -> Check:
    tokenizer = adapter.tokenizer
    # Text-only chat templates (Qwen2, InternLM2) read a turn's content as a string, multimodal ones as parts.
    content = [{"type": "text", "text": "hi"}] if adapter.reads_images else "hi"
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    markers = sorted({token for token in tokenizer.get_added_vocab() if token in text})
    split = [token for token in markers if tokenizer.convert_tokens_to_ids(token) not in ids]
    if split:
        return Check("chat template", FAIL, f"template tokens not encoded as one id: {', '.join(split)}")
    used = f"{len(markers)} special tokens, each one id: {' '.join(markers)}"
    if adapter.chat_template_source == "fallback":
        return Check("chat template", WARN, f"checkpoint ships none; the adapter's fallback is used ({used})")
    return Check("chat template", OK, f"from the checkpoint ({used})")


def check_passkey_and_capture(adapter: ModelAdapter, sample: Sample) -> list[Check]:
    from ocr_heads.attention import capture, verify_against_eager  # torch: imported when a check runs, not for --help

    # A text-only language model is asked the passkey as step2_text_retrieval_head.py asks it: the context as text.
    inputs = (adapter.image_inputs(sample.load_pages(), sample.question) if adapter.reads_images
              else adapter.text_inputs(sample.context, sample.question))
    with capture(adapter) as recorder:
        recorder.reset(inputs.prompt_length)
        generated = adapter.generate(inputs, MAX_NEW_TOKENS)
        record = recorder.result()
    output = adapter.decode(generated)
    if not generated:
        return [Check("passkey", FAIL, "generate produced no tokens"), Check("capture == eager", SKIP, "")]
    passkey = check_answer(adapter, sample, output)
    mismatches = verify_against_eager(adapter, inputs, generated, record)
    steps, layers, heads = record.argmax.shape
    if mismatches:
        eager = Check("capture == eager", FAIL, f"{len(mismatches)} argmax differ, first: {mismatches[0]}")
    else:
        eager = Check("capture == eager", OK, f"{steps} steps x {layers} layers x {heads} heads agree")
    return [passkey, eager]


def check_answer(adapter: ModelAdapter, sample: Sample, output: str) -> Check:
    """ok when the output holds the key; a miss fails, except for a model with random weights (it cannot read)."""
    detail = f"key {sample.answer}, output {output!r}"
    if sample.answer in output:
        return Check("passkey", OK, detail)
    if getattr(adapter.config, "ocr_heads_random_weights", False):
        return Check("passkey", WARN, f"{detail} -- no answer (random weights)")
    # A model that misreads its own protocol's page would score zeros in step2: say so before the long run.
    other = NATIVE if adapter.protocol == PAPER else PAPER
    return Check("passkey", FAIL, f"{detail} -- misread under protocol {adapter.protocol} ({adapter.protocol_source}); "
                                  f"try --protocol {other}, or --data DIR with pages of the kind it was trained on")


def run_checks(model_id: str, kwargs: dict, sample: Sample | None = None) -> list[Check]:
    """Every row; ``sample``: the passkey sample to read (default: a rendered step1 passkey page)."""
    try:
        checks = [check_token_ids(model_id)]
    except (OSError, ValueError) as err:
        checks = [Check("token ids", FAIL, f"{type(err).__name__}: {err}")]
    try:
        adapter = load_adapter(model_id, **kwargs)
    except (OSError, ValueError) as err:
        checks.append(Check("load", FAIL, str(err)))
        return checks + [Check(name, SKIP, "not loaded") for name in
                         ("protocol", "chat template", "passkey", "capture == eager")]
    shape = adapter.shape
    checks.append(Check("load", OK, f"{type(adapter).__name__} {adapter.name}: {shape.num_layers} layers x "
                                    f"{shape.num_heads} heads ({shape.num_kv_heads} kv)"))
    with tempfile.TemporaryDirectory() as tmp:
        sample = sample or render_sample(Path(tmp))
        for step in (check_protocol, check_chat_template, check_passkey_and_capture):
            args = (adapter,) if step is check_chat_template else (adapter, sample)
            try:
                result = step(*args)
            except (RuntimeError, ValueError) as err:
                result = Check(step.__name__.removeprefix("check_").replace("_", " "), FAIL,
                               f"{type(err).__name__}: {err}")
            checks.extend(result if isinstance(result, list) else [result])
    return checks


def format_table(checks: list[Check]) -> str:
    width = max(len(check.name) for check in checks)
    return "\n".join(f"{check.name:<{width}}  {check.status:<4}  {check.detail}" for check in checks)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description="Self-check a model before a long run: special-token ids, loading, the page protocol and "
        "tokens per page, the chat template, one rendered passkey answered, capture == eager attention.",
        epilog="Prints one table (check, ok/warn/FAIL/skip, detail); exits 1 if any check FAILs. 'warn' rows "
        "(no chat template in the checkpoint; passkey not answered by a model marked random-weights) do not fail.",
    )
    add_model_args(parser)
    parser.add_argument("--data", type=Path, default=None, metavar="DIR",
                        help="a step1 folder: check its first sample's page (default: a rendered step1 passkey page)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        kwargs = adapter_kwargs(args)
        family_loader(args.model_id)
        sample = load_samples(args.data, limit=1)[0] if args.data is not None else None
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    checks = run_checks(args.model_id, kwargs, sample)
    print(format_table(checks))
    failed = [check.name for check in checks if check.status == FAIL]
    if failed:
        print(f"doctor: {len(failed)} failed: {', '.join(failed)}")
        return 1
    warned = [check.name for check in checks if check.status == WARN]
    print("doctor: all checks passed" + (f" ({len(warned)} warned: {', '.join(warned)})" if warned else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
