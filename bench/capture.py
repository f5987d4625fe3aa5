"""Benchmark: memory and time of head scoring by (a) the authors' approach, (b) our capture, (c) plain generate.

    python bench/capture.py [--json] [--lengths 2048 8192] [--pages 4] [--new 16] [--pairs 5]
    python bench/capture.py --long [--layers 4]          # Qwen2-VL-2B width, random weights, 2k and 8k tokens
    python bench/capture.py --device cuda --size 2b|7b --full    # the GPU table (random bf16 weights)

(a) eager attention + ``generate(output_attentions=True)``, every attention matrix kept;
(b) ``ocr_heads.attention.capture`` (sdpa + per-step argmax of the producing row);
(c) plain ``generate`` with sdpa, nothing recorded.

All methods run in one process. (b) and (c) run as interleaved pairs: after one warm-up run of each,
round i runs c b or b c (alternating), so other jobs' load and any drift hit both sides of a pair
alike; time ours/plain is the median over rounds of (b)'s time / (c)'s time in the same round,
printed with its range. (a) runs after the pairs (warm-up + as many runs), never between the two sides
of a pair. Each method's own time is its median. Models: the tiny model
(default), or ``--size 2b|7b``, the published Qwen2-VL architecture from ``configs/`` with random
weights (``--layers N`` keeps N decoder layers and vision blocks at the published widths; float32
on the CPU). ``--long`` is the realistic-width case: 2B widths (hidden 1536, 12 heads / 2 kv heads,
intermediate 8960), ``--layers`` (default 4), text at 2k and 8k tokens, the authors' approach at 2k only.
A batch repeats the prompt B times (``--batch_sizes``; the authors' approach at batch 1 only).

Peak memory is the rise of the process's resident-set high-water mark over its level just before
``generate`` (Linux /proc/self/clear_refs resets it; freed heap is handed back first with glibc's
malloc_trim so that one method cannot run in memory another left behind), or of CUDA's peak
allocation on a GPU; the least disturbed (smallest) run is kept. A method that runs out of GPU
memory is printed as failed and the table goes on (on the CPU the kernel's OOM killer ends the
process: keep --authors-max within RAM). Prints a table; with --json the last line is one JSON
object with ``peak_mem_ratio`` (a/b at the largest context) and ``time_ratio`` (median b/c, worst case).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from measure import Peak, Runs, out_of_memory
from measure import ratio as _ratio

METHODS = ("authors", "capture", "plain")


class Bench:
    """One loaded model and the way to time and measure ``generate`` on it."""

    def __init__(self, model_dir: str, device: str = "auto") -> None:
        import torch

        from ocr_heads.models import load_adapter

        self.cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
        if self.cuda and not torch.cuda.is_available():
            raise SystemExit("error: --device cuda, but torch sees no GPU")
        if not self.cuda:
            torch.set_num_threads(2)
        self.adapter = load_adapter(model_dir, device_map="cuda" if self.cuda else None)
        self.device = torch.cuda.get_device_name() if self.cuda else "cpu"

    def inputs(self, modality: str, size: int, batch: int) -> tuple[dict, int]:
        """The batch's tensors and the prompt length: ``size`` characters of text, or ``size`` pages."""
        from ocr_heads.data.haystack import embedded_corpus
        from ocr_heads.data.render import PageLayout
        from ocr_heads.models.base import collate

        adapter = self.adapter
        if modality == "text":
            one = adapter.text_inputs(embedded_corpus()[:size], "What is the pass key?")
        else:
            pages = PageLayout(embedded_corpus()[: size * 750]).render()[:size]
            one = adapter.image_inputs(pages, "What is the pass key?")
        tensors = {k: v.to(adapter.device) for k, v in collate([one] * batch, adapter.pad_token_id).items()}
        return tensors, one.prompt_length

    def run(self, method: str, tensors: dict, new_tokens: int) -> tuple[float, float]:
        """One ``generate`` by ``method``: (seconds, peak memory rise in MiB)."""
        import torch

        from ocr_heads.attention import capture, text_attention

        common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        model = self.adapter.model
        with contextlib.ExitStack() as scope, torch.no_grad():
            # The scopes are entered before the clock starts: only generate (and reading the record) is timed.
            recorder = scope.enter_context(capture(self.adapter)) if method == "capture" else None
            if method == "authors":
                scope.enter_context(text_attention(self.adapter, "eager"))
            meter = Peak(self.cuda)
            meter.start()
            start = time.perf_counter()
            if method == "authors":
                out = model.generate(**tensors, **common, output_attentions=True, return_dict_in_generate=True)
                assert out.attentions is not None
            else:
                if recorder is not None:
                    recorder.reset()  # step2 enters capture once per run and resets per batch, as here
                model.generate(**tensors, **common)
                if recorder is not None:
                    recorder.results()
            meter.synchronize()
            seconds = time.perf_counter() - start
            peak = meter.stop()
        return seconds, peak

    def measure(self, modality: str, size: int, batch: int, methods: tuple[str, ...], new_tokens: int,
                pairs: int) -> dict:
        """``pairs`` interleaved plain/capture pairs, then the authors' runs; one summary dict."""
        tensors, prompt_tokens = self.inputs(modality, size, batch)
        runs = {method: Runs() for method in methods}
        paired = tuple(method for method in ("plain", "capture") if method in methods)
        for round_index in range(pairs + 1):  # round 0 is the warm-up (allocator, kernels): not kept
            for method in paired if round_index % 2 == 0 else paired[::-1]:
                self._record(runs[method], method, tensors, new_tokens, keep=round_index > 0)
        # The authors' approach last: its memory-heavy runs never sit between the two sides of a pair.
        if "authors" in runs:
            for round_index in range(pairs + 1):
                self._record(runs["authors"], "authors", tensors, new_tokens, keep=round_index > 0)
        return summarize(modality, size, batch, prompt_tokens, runs, self.device)

    def _record(self, runs: Runs, method: str, tensors: dict, new_tokens: int, keep: bool) -> None:
        if runs.error is not None:
            return
        try:
            seconds, peak = self.run(method, tensors, new_tokens)
        except (RuntimeError, MemoryError) as err:  # e.g. the authors' approach: the table goes on
            if not out_of_memory(err):
                raise
            runs.error = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            return
        if keep:
            runs.seconds.append(seconds)
            runs.peaks_mib.append(peak)


def summarize(modality: str, size: int, batch: int, prompt_tokens: int, runs: dict[str, Runs], device: str) -> dict:
    """Per-method rows (median time, least disturbed peak) and the paired ratios of one input."""
    rows = {}
    for method, kept in runs.items():
        if kept.error is not None or not kept.seconds:
            rows[method] = {"error": kept.error or "no run"}
            continue
        rows[method] = {"seconds": statistics.median(kept.seconds), "peak_mib": min(kept.peaks_mib)}
    case: dict = {"input": f"{modality}:{size}:b{batch}", "modality": modality, "size": size, "batch": batch,
                  "prompt_tokens": prompt_tokens, "device": device, "methods": rows}
    ok = {method for method, row in rows.items() if "error" not in row}
    if {"capture", "plain"} <= ok:
        # Round i ran both: their quotient is measured under the same load.
        pair_ratios = [ours / plain for ours, plain in zip(runs["capture"].seconds, runs["plain"].seconds,
                                                            strict=True)]
        case["time_ratios"] = pair_ratios
        case["time_ratio"] = statistics.median(pair_ratios)
        case["time_ratio_range"] = [min(pair_ratios), max(pair_ratios)]
        case["samples_per_s"] = batch / rows["capture"]["seconds"]
        # ours/plain: what capture adds on top of generate (flat = ~1 at every length).
        case["mem_ratio_ours_plain"] = _ratio(rows["capture"]["peak_mib"], rows["plain"]["peak_mib"])
    if {"authors", "capture"} <= ok:
        case["peak_mem_ratio"] = _ratio(rows["authors"]["peak_mib"], rows["capture"]["peak_mib"])
    return case


def measure(model_dir: str, modality: str, size: int, new_tokens: int = 16, pairs: int = 5, device: str = "auto",
            batch: int = 1, methods: tuple[str, ...] = METHODS) -> dict:
    """One input measured in this process (see :meth:`Bench.measure`)."""
    return Bench(model_dir, device).measure(modality, size, batch, methods, new_tokens, pairs)


def print_case(case: dict) -> None:
    label = f"{case['modality']} {case['size']}" + (" pages" if case["modality"] == "image" else "")
    for method, row in case["methods"].items():
        if "error" in row:
            print(f"{label:>14} {case['batch']:>5} {case['prompt_tokens']:>7} | {method:>8} failed: {row['error']}")
        else:
            print(f"{label:>14} {case['batch']:>5} {case['prompt_tokens']:>7} | {method:>8} "
                  f"{row['peak_mib']:>9.1f} {row['seconds']:>8.3f}")


def print_ratios(case: dict) -> None:
    if "time_ratio" not in case:
        return
    authors = f"peak memory authors/ours = {case['peak_mem_ratio']:.1f}x, " if "peak_mem_ratio" in case else ""
    low, high = case["time_ratio_range"]
    print(f"{case['input']:>16}: {authors}peak memory ours/plain = {case['mem_ratio_ours_plain']:.2f}x, "
          f"time ours/plain = {case['time_ratio']:.2f}x (median of {len(case['time_ratios'])} pairs, "
          f"range {low:.2f}-{high:.2f}), capture {case['samples_per_s']:.2f} samples/s")


def build_model(tmp: Path, size: str, layers: int | None) -> str:
    if size == "tiny":
        from ocr_heads.models.tiny.build import build_tiny_qwen2_vl

        return str(build_tiny_qwen2_vl(tmp / "tiny", seed=0))
    from ocr_heads.smoke import FULL_SIZE, build_full_size

    return str(build_full_size(tmp / f"qwen2-vl-{size}-random", 0, FULL_SIZE[size], layers=layers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=None, help="text contexts, in characters"
                        " (= tokens with the character tokenizer of every model built here; default 2048 8192)")
    parser.add_argument("--pages", type=int, nargs="*", default=None, help="pages of the image inputs "
                        "(default 4; none with --long)")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1], help="prompts per generate (default 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run (default: cuda if available)")
    parser.add_argument("--size", choices=["tiny", "2b", "7b"], default=None,
                        help="tiny model (default), or the Qwen2-VL-2B/7B architecture with random weights")
    parser.add_argument("--layers", type=int, default=None, help="with --size 2b|7b: keep N decoder layers and "
                        "vision blocks (default: all; 4 with --long)")
    parser.add_argument("--full", action="store_true", help="GPU preset: text 2k/8k/32k/128k, 1/4/16 pages, "
                        "batch 1 and 16")
    parser.add_argument("--long", action="store_true", help="realistic-width preset: --size 2b --layers 4, "
                        "text 2k and 8k tokens, no pages, the authors' approach at 2k only")
    parser.add_argument("--authors-max", type=int, default=None,
                        help="longest context for the authors' approach, which keeps every attention matrix "
                        "(default 8192; 2048 with --long)")
    parser.add_argument("--new", type=int, default=16, help="new tokens per generate")
    parser.add_argument("--pairs", "--repeats", type=int, default=None,
                        help="timed rounds after the warm-up (default 5; 3 with --long)")
    parser.add_argument("--model", default=None, help="model dir (default: build the --size model in a temp dir)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args()
    size = args.size or ("2b" if args.long else "tiny")
    layers = args.layers if args.layers is not None else (4 if args.long and size != "tiny" else None)
    lengths = args.lengths or ([2048, 8192] if not args.full else [2048, 8192, 32768, 131072])
    pages = args.pages if args.pages is not None else ([] if args.long else [1, 4, 16] if args.full else [4])
    batch_sizes = [1, 16] if args.full else args.batch_sizes
    authors_max = args.authors_max if args.authors_max is not None else (2048 if args.long else 8192)
    pairs = args.pairs if args.pairs is not None else (3 if args.long else 5)

    cases = [("text", n, b) for b in batch_sizes for n in lengths]
    cases += [("image", n, b) for b in batch_sizes for n in pages]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp), size, layers)
        bench = Bench(model, args.device)
        shape = bench.adapter.shape
        described = args.model or f"{size}" + (f", {shape.num_layers} layers" if size != "tiny" else "")
        print(f"device: {bench.device}, model: {described}, {args.new} new tokens, {pairs} timed rounds "
              f"(methods interleaved in one process)", flush=True)
        print(f"{'input':>14} {'batch':>5} {'tokens':>7} | {'method':>8} {'peak MiB':>9} {'median s':>8}", flush=True)
        summary: dict = {"device": bench.device, "model": described, "cases": []}
        for modality, n, batch in cases:
            methods = tuple(m for m in METHODS
                            if m != "authors" or (batch == 1 and (modality == "image" or n <= authors_max)))
            case = bench.measure(modality, n, batch, methods, args.new, pairs)
            summary["cases"].append(case)
            print_case(case)
        for case in summary["cases"]:
            print_ratios(case)
    timed = [c for c in summary["cases"] if "time_ratio" in c]
    with_authors = [c for c in timed if c["modality"] == "text" and "peak_mem_ratio" in c]
    if with_authors:
        summary["peak_mem_ratio"] = max(with_authors, key=lambda c: c["prompt_tokens"])["peak_mem_ratio"]
    if timed:
        summary["time_ratio"] = max(c["time_ratio"] for c in timed)
    # Batch throughput: capture samples/s at the largest batch over batch 1, per input.
    rates = {c["input"]: c["samples_per_s"] for c in timed}
    top = max(batch_sizes)
    summary["batch_speedup"] = {}
    for modality, n, batch in cases:
        one, many = rates.get(f"{modality}:{n}:b1"), rates.get(f"{modality}:{n}:b{top}")
        if batch == top and top > 1 and one and many:
            summary["batch_speedup"][f"{modality}:{n}"] = many / one
            print(f"{modality}:{n}: batch {top} capture throughput = {many / one:.2f}x batch 1")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
