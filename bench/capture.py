"""Benchmark: memory and time of head scoring by (a) the authors' approach, (b) our capture, (c) plain generate.

    python bench/capture.py [--json] [--lengths 2048 8192] [--pages 4] [--new 16] [--batch_sizes 1 16]
    python bench/capture.py --device cuda --size 2b|7b --full    # the GPU table (random bf16 weights)

(a) eager attention + ``generate(output_attentions=True)``, every attention matrix kept;
(b) ``ocr_heads.attention.capture`` (sdpa + per-step argmax of the producing row);
(c) plain ``generate`` with sdpa, nothing recorded.
Each measurement runs in a fresh subprocess (default: the tiny model; ``--size 2b|7b``: the published
Qwen2-VL architecture from ``configs/`` with random bf16 weights); a batch repeats the prompt B
times (``--batch_sizes``; the authors' approach at batch 1 only); peak memory is the rise of
the process's resident-set high-water mark over its level just before ``generate`` (Linux
/proc/self/clear_refs resets it), or of CUDA's peak allocation when a GPU is present. Prints a
table; with --json the last line is one JSON object with ``peak_mem_ratio`` (a/b at the largest
context) and ``time_ratio`` (b/c, worst case).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METHODS = ("authors", "capture", "plain")


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(model_dir: str, method: str, modality: str, size: int, new_tokens: int, repeats: int,
            device: str = "auto", batch: int = 1) -> dict:
    """One measurement in this process: peak memory rise (MiB) and best wall time (s) of generate."""
    import torch
    from PIL import Image

    from ocr_heads.attention import capture, text_attention
    from ocr_heads.data.haystack import embedded_corpus
    from ocr_heads.data.render import PageLayout
    from ocr_heads.models import load_adapter
    from ocr_heads.models.base import collate

    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no GPU")
    if not cuda:
        torch.set_num_threads(2)
    adapter = load_adapter(model_dir, device_map="cuda" if cuda else None)
    if modality == "text":
        inputs = adapter.text_inputs(embedded_corpus()[:size], "What is the pass key?")
    else:
        pages: list[Image.Image] = PageLayout(embedded_corpus()[: size * 750]).render()[:size]
        inputs = adapter.image_inputs(pages, "What is the pass key?")
    tensors = {k: v.to(adapter.device) for k, v in collate([inputs] * batch, adapter.pad_token_id).items()}

    stack = contextlib.ExitStack()

    def run() -> None:
        common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        with torch.no_grad():
            if method == "authors":
                with text_attention(adapter, "eager"):
                    out = adapter.model.generate(**tensors, **common, output_attentions=True,
                                                 return_dict_in_generate=True)
                assert out.attentions is not None
            elif method == "capture":
                recorder.reset()  # step2 enters capture once per run and resets per batch, as here
                adapter.model.generate(**tensors, **common)
                recorder.results()
            else:
                adapter.model.generate(**tensors, **common)

    recorder = stack.enter_context(capture(adapter)) if method == "capture" else None
    run()  # warm-up (allocator, kernels)
    times, peaks = [], []
    for _ in range(repeats):
        # Peak of this run alone: reset the high-water mark, then read how far above the start it went.
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() / 1024
        else:
            Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
            before = _rss_kib("VmRSS")
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        peaks.append((torch.cuda.max_memory_allocated() / 1024 if cuda else _rss_kib("VmHWM")) - before)
    peak = min(peaks)  # the least disturbed run (allocator noise only ever adds)
    stack.close()
    return {"method": method, "modality": modality, "size": size, "batch": batch, "prompt_tokens": inputs.prompt_length,
            "peak_mib": max(peak, 0) / 1024, "seconds": min(times),
            "device": torch.cuda.get_device_name() if cuda else "cpu"}


# Resident-set readings move in whole pages and allocator chunks: peaks under 1 MiB are read as 1 MiB
# in ratios, so "nothing measurable" does not turn into an absurd quotient.
MIN_MIB = 1.0


def _ratio(a: float, b: float) -> float:
    return max(a, MIN_MIB) / max(b, MIN_MIB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192], help="text contexts, in characters"
                        " (= tokens with the tiny model's character tokenizer)")
    parser.add_argument("--pages", type=int, nargs="+", default=[4], help="pages of the image inputs")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1], help="prompts per generate (default 1)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where to run (default: cuda if available)")
    parser.add_argument("--size", choices=["tiny", "2b", "7b"], default="tiny",
                        help="tiny model, or the Qwen2-VL-2B/7B architecture with random bf16 weights")
    parser.add_argument("--full", action="store_true", help="GPU preset: text 2k/8k/32k/128k, 1/4/16 pages, "
                        "batch 1 and 16")
    parser.add_argument("--long", action="store_true", help="long-context preset: text contexts of 2k, 8k, 16k and "
                        "32k tokens; the authors' approach only up to --authors-max")
    parser.add_argument("--authors-max", type=int, default=8192,
                        help="longest context for the authors' approach (it keeps every attention matrix)")
    parser.add_argument("--new", type=int, default=16, help="new tokens per generate")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best is kept)")
    parser.add_argument("--model", default=None, help="model dir (default: build the tiny model in a temp dir)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "MODALITY", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, modality, size = args.one
        print(json.dumps(measure(args.model, method, modality, int(size), args.new, args.repeats, args.device,
                                 args.batch_sizes[0])))
        return
    if args.long:
        args.lengths = [2048, 8192, 16384, 32768]
    if args.full:
        args.lengths, args.pages, args.batch_sizes = [2048, 8192, 32768, 131072], [1, 4, 16], [1, 16]
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None and args.size == "tiny":
            from ocr_heads.models.tiny.build import build_tiny_qwen2_vl

            model = str(build_tiny_qwen2_vl(Path(tmp) / "tiny", seed=0))
        elif model is None:
            from ocr_heads.smoke import FULL_SIZE, build_full_size

            model = str(build_full_size(Path(tmp) / f"qwen2-vl-{args.size}-random", 0, FULL_SIZE[args.size]))
        cases = [("text", n, b) for b in args.batch_sizes for n in args.lengths]
        cases += [("image", n, b) for b in args.batch_sizes for n in args.pages]
        rows = []
        for modality, size, batch in cases:
            for method in METHODS:
                if method == "authors" and (batch > 1 or modality == "text" and size > args.authors_max):
                    continue
                cmd = [sys.executable, __file__, "--model", model, "--new", str(args.new), "--repeats",
                       str(args.repeats), "--device", args.device, "--batch_sizes", str(batch),
                       "--one", method, modality, str(size)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode == 0:
                    rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                else:  # e.g. out of memory: a row that says so, the table goes on
                    last = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    rows.append({"method": method, "modality": modality, "size": size, "batch": batch,
                                 "prompt_tokens": None, "peak_mib": None, "seconds": None, "error": last[-200:]})
    device = next((r["device"] for r in rows if "device" in r), args.device)
    print(f"device: {device}, model: {args.size if args.model is None else args.model}, {args.new} new tokens")
    print(f"{'input':>14} {'batch':>5} {'tokens':>7} | {'method':>8} {'peak MiB':>9} {'time s':>8}")
    for row in rows:
        label = f"{row['modality']} {row['size']}" + (" pages" if row["modality"] == "image" else "")
        if "error" in row:
            print(f"{label:>14} {row['batch']:>5} {'':>7} | {row['method']:>8} failed: {row['error']}")
            continue
        print(f"{label:>14} {row['batch']:>5} {row['prompt_tokens']:>7} | {row['method']:>8} "
              f"{row['peak_mib']:>9.1f} {row['seconds']:>8.3f}")
    summary = {"device": device, "cases": []}
    for modality, size, batch in cases:
        by = {r["method"]: r for r in rows
              if r["modality"] == modality and r["size"] == size and r["batch"] == batch and "error" not in r}
        if "capture" not in by or "plain" not in by:
            continue
        case = {"input": f"{modality}:{size}:b{batch}", "prompt_tokens": by["plain"]["prompt_tokens"],
                "samples_per_s": batch / by["capture"]["seconds"],
                "time_ratio": by["capture"]["seconds"] / by["plain"]["seconds"],
                # ours/plain: what capture adds on top of generate (flat = ~1 at every length).
                "mem_ratio_ours_plain": _ratio(by["capture"]["peak_mib"], by["plain"]["peak_mib"])}
        if "authors" in by:
            case["peak_mem_ratio"] = _ratio(by["authors"]["peak_mib"], by["capture"]["peak_mib"])
        summary["cases"].append(case)
        authors = f"peak memory authors/ours = {case['peak_mem_ratio']:.1f}x, " if "authors" in by else ""
        print(f"{case['input']:>16}: {authors}peak memory ours/plain = {case['mem_ratio_ours_plain']:.2f}x, "
              f"time ours/plain = {case['time_ratio']:.2f}x, capture {case['samples_per_s']:.2f} samples/s")
    with_authors = [c for c in summary["cases"] if c["input"].startswith("text") and "peak_mem_ratio" in c]
    if with_authors:
        summary["peak_mem_ratio"] = max(with_authors, key=lambda c: c["prompt_tokens"])["peak_mem_ratio"]
    if summary["cases"]:
        summary["time_ratio"] = max(c["time_ratio"] for c in summary["cases"])
    # Batch throughput: capture samples/s at the largest batch over batch 1, per input.
    rates = {c["input"]: c["samples_per_s"] for c in summary["cases"]}
    top = max(args.batch_sizes)
    summary["batch_speedup"] = {}
    for modality, size, batch in cases:
        one, many = rates.get(f"{modality}:{size}:b1"), rates.get(f"{modality}:{size}:b{top}")
        if batch == top and top > 1 and one and many:
            summary["batch_speedup"][f"{modality}:{size}"] = many / one
            print(f"{modality}:{size}: batch {top} capture throughput = {many / one:.2f}x batch 1")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
