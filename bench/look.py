"""Benchmark: peak memory and time of look's capture vs plain generate vs eager output_attentions.

    python bench/look.py [--lengths 2048 8192 32768] [--new 16] [--pairs 5] [--eager-max-gib 6] [--json]

On the tiny Qwen2-VL architecture (``build_tiny_qwen2_vl``, random weights; or ``--model DIR``), one prompt per
length: one rendered page (its image tokens) and filler text before the question, up to the prompt length
(character tokenizer: one token per character). Three ways to generate the same greedy tokens:

- look: sdpa under ``ocr_heads.attention.capture`` with the :class:`~ocr_heads.attention.probes.ImageAttention`
  probe (every producing row's probability on every image token, plus the group masses), as
  ``ocr_heads.maps.run.look`` runs it; reading the probe's result is timed;
- plain: sdpa ``generate``, nothing recorded;
- eager: ``attn_implementation="eager"`` and ``generate(output_attentions=True, return_dict_in_generate=True)``,
  what users do today: every attention matrix is kept.

All in one process. look and plain run as interleaved pairs (after one warm-up each: plain look, look plain,
...), so other jobs' load hits both sides of a pair; time look/plain is the median over pairs of the quotient
in the same pair. eager runs after the pairs, and only where its estimated memory fits ``--eager-max-gib``:
layers x heads x S^2 x 4 bytes of prefill attention kept, plus one more layer's S^2 scores while it is computed
(the decode rows, S each, are negligible); beyond that the row says "would need N GiB: not run". With
``--max-gib`` (default 8) the whole process runs under RLIMIT_AS of that size, so an allocation that does not fit
fails as "out of memory" instead of pushing the machine into swap or the OOM killer. Peak memory, as in
bench/capture.py (``bench/measure.py``): the rise of the resident-set high-water mark over the level just
before ``generate``, the smallest of the kept runs. Prints a table; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from capture import Bench, build_model  # noqa: E402
from measure import Peak, Runs, out_of_memory, ratio  # noqa: E402

METHODS = ("look", "plain", "eager")
QUESTION = "What is the pass key?"
GIB = 1024**3


@contextlib.contextmanager
def _scope(bench: Bench, method: str):
    """The method's context, entered before the clock starts; yields the recorder for look."""
    from ocr_heads.attention import capture, text_attention

    if method == "look":
        with capture(bench.adapter) as recorder:
            yield recorder
    elif method == "eager":
        with text_attention(bench.adapter, "eager"):
            yield None
    else:
        yield None


class LookBench(Bench):
    """One loaded model; prompts of a page plus filler text, measured by the three methods."""

    def inputs(self, tokens: int) -> dict:
        """The prompt of about ``tokens`` tokens (never shorter than one page and the question), and its probe."""
        from ocr_heads.attention.probes import ImageAttention
        from ocr_heads.data.haystack import embedded_corpus
        from ocr_heads.data.render import PageLayout
        from ocr_heads.maps.run import ImageTokenOrder, token_groups
        from ocr_heads.models.base import collate

        adapter = self.adapter
        corpus = embedded_corpus()
        page = PageLayout(corpus[:750]).render()[0]
        base = adapter.image_inputs([page], QUESTION).prompt_length
        filler = (corpus * (1 + tokens // len(corpus)))[: max(tokens - base - 2, 0)]
        question = f"{filler}\n\n{QUESTION}" if filler else QUESTION
        one = adapter.image_inputs([page], question)
        order = ImageTokenOrder.of(one)
        groups = token_groups(adapter, one, QUESTION, None)
        probe = ImageAttention(tuple(order.positions), groups)  # float16 maps, every layer and head: look's default
        tensors = {k: v.to(adapter.device) for k, v in collate([one], adapter.pad_token_id).items()}
        return {"tensors": tensors, "prompt_tokens": one.prompt_length, "image_tokens": len(order.positions),
                "probe": probe}

    def run_method(self, method: str, prompt: dict, new_tokens: int) -> tuple[float, float]:
        """One ``generate`` by ``method``: (seconds, peak memory rise in MiB)."""
        import torch

        from ocr_heads.attention.probes import ImageAttention

        common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        model = self.adapter.model
        with _scope(self, method) as recorder, torch.no_grad():
            meter = Peak(self.cuda)
            meter.start()
            start = time.perf_counter()
            if method == "eager":
                out = model.generate(**prompt["tensors"], **common, output_attentions=True,
                                     return_dict_in_generate=True)
                assert out.attentions is not None
            else:
                if recorder is not None:
                    recorder.reset(prompt["prompt_tokens"], [prompt["probe"]])  # as look does, per generate
                model.generate(**prompt["tensors"], **common)
                if recorder is not None:
                    recorder.probe_result(ImageAttention)
                    recorder.result()
            meter.synchronize()
            seconds = time.perf_counter() - start
            peak = meter.stop()
            del recorder
        return seconds, peak

    def record(self, runs: Runs, method: str, prompt: dict, new_tokens: int, keep: bool) -> None:
        if runs.error is not None:
            return
        try:
            seconds, peak = self.run_method(method, prompt, new_tokens)
        except (RuntimeError, MemoryError) as err:
            if not out_of_memory(err):
                raise
            runs.error = "out of memory"
            return
        if keep:
            runs.seconds.append(seconds)
            runs.peaks_mib.append(peak)

    def eager_gib(self, tokens: int, new_tokens: int) -> float:
        """Estimated memory of eager output_attentions: the kept prefill matrices plus one layer's while computed."""
        shape = self.adapter.shape
        total = tokens + new_tokens
        return (shape.num_layers + 1) * shape.num_heads * total * total * 4 / GIB

    def measure(self, tokens: int, new_tokens: int, pairs: int, eager_max_gib: float,
                methods: tuple[str, ...] = METHODS) -> dict:
        """``pairs`` interleaved look/plain pairs, then eager where it fits; one summary dict."""
        prompt = self.inputs(tokens)
        runs = {method: Runs() for method in methods}
        paired = tuple(method for method in ("plain", "look") if method in methods)
        for round_index in range(pairs + 1):  # round 0 is the warm-up (allocator, kernels): not kept
            for method in paired if round_index % 2 == 0 else paired[::-1]:
                self.record(runs[method], method, prompt, new_tokens, keep=round_index > 0)
        estimate = self.eager_gib(prompt["prompt_tokens"], new_tokens)
        if "eager" in runs:
            if estimate > eager_max_gib:
                runs["eager"].error = f"would need {estimate:.1f} GiB: not run"
            else:
                for round_index in range(pairs + 1):
                    self.record(runs["eager"], "eager", prompt, new_tokens, keep=round_index > 0)
        case = summarize(runs, tokens, prompt["prompt_tokens"], prompt["image_tokens"])
        case["eager_estimate_gib"] = estimate
        return case


def summarize(runs: dict[str, Runs], tokens: int, prompt_tokens: int, image_tokens: int) -> dict:
    """Per-method rows (median time, least disturbed peak) and the ratios of one length."""
    rows = {}
    for method, kept in runs.items():
        if kept.error is not None or not kept.seconds:
            rows[method] = {"error": kept.error or "no run"}
        else:
            rows[method] = {"seconds": statistics.median(kept.seconds), "peak_mib": min(kept.peaks_mib)}
    case: dict = {"tokens": tokens, "prompt_tokens": prompt_tokens, "image_tokens": image_tokens, "methods": rows}
    ok = {method for method, row in rows.items() if "error" not in row}
    if {"look", "plain"} <= ok:
        pair_ratios = [a / b for a, b in zip(runs["look"].seconds, runs["plain"].seconds, strict=True)]
        case["time_ratios"] = pair_ratios
        case["time_ratio"] = statistics.median(pair_ratios)
        case["time_ratio_range"] = [min(pair_ratios), max(pair_ratios)]
        case["mem_ratio"] = ratio(rows["look"]["peak_mib"], rows["plain"]["peak_mib"])
    if {"eager", "look"} <= ok:
        case["eager_mem_ratio"] = ratio(rows["eager"]["peak_mib"], rows["look"]["peak_mib"])
    return case


def print_case(case: dict) -> None:
    for method, row in case["methods"].items():
        head = f"{case['prompt_tokens']:>7} | {method:>6}"
        if "error" in row:
            print(f"{head} {row['error']}", flush=True)
        else:
            print(f"{head} {row['peak_mib']:>9.1f} {row['seconds']:>9.3f}", flush=True)


def print_ratios(cases: list[dict]) -> None:
    print(f"{'tokens':>7} | {'look/plain mem':>14} {'look/plain time (pairs, range)':>31} {'eager/look mem':>14}")
    for case in cases:
        if "time_ratio" not in case:
            print(f"{case['prompt_tokens']:>7} | look or plain failed")
            continue
        low, high = case["time_ratio_range"]
        timed = f"{case['time_ratio']:.2f} ({len(case['time_ratios'])}, {low:.2f}-{high:.2f})"
        eager = case["eager_mem_ratio"] if "eager_mem_ratio" in case else None
        eager_text = f"{eager:.1f}" if eager is not None else case["methods"].get("eager", {}).get("error", "-")
        print(f"{case['prompt_tokens']:>7} | {case['mem_ratio']:>14.2f} {timed:>31} {eager_text:>14}")


def limit_memory(gib: float) -> None:
    """Cap this process's address space (RLIMIT_AS): an allocation beyond it fails instead of the machine."""
    limit = int(gib * GIB)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192, 32768],
                        help="prompt tokens (default 2048 8192 32768)")
    parser.add_argument("--new", type=int, default=16, help="new tokens per generate (default 16)")
    parser.add_argument("--pairs", type=int, default=5, help="timed look/plain pairs after the warm-up (default 5)")
    parser.add_argument("--eager-max-gib", type=float, default=6.0,
                        help="run eager only where its estimated attention memory is at most this (default 6)")
    parser.add_argument("--max-gib", type=float, default=8.0,
                        help="RLIMIT_AS of this process in GiB (default 8; 0: no limit)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    parser.add_argument("--model", default=None, help="model dir (default: build the tiny Qwen2-VL in a temp dir)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)
    if args.max_gib > 0:
        limit_memory(args.max_gib)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_model(Path(tmp), "tiny", None)
        bench = LookBench(model, args.device)
        shape = bench.adapter.shape
        described = args.model or "tiny Qwen2-VL"
        described += f" ({shape.num_layers} layers, {shape.num_heads} heads)"
        print(f"device: {bench.device}, model: {described}, one page + filler text, {args.new} new tokens, "
              f"{args.pairs} look/plain pairs interleaved in one process, then eager", flush=True)
        print(f"{'tokens':>7} | {'method':>6} {'peak MiB':>9} {'median s':>9}", flush=True)
        cases = []
        for tokens in args.lengths:
            case = bench.measure(tokens, args.new, args.pairs, args.eager_max_gib)
            cases.append(case)
            print_case(case)
    print_ratios(cases)
    summary: dict = {"device": bench.device, "model": described, "new_tokens": args.new, "pairs": args.pairs,
                     "cases": cases}
    timed = [case for case in cases if "mem_ratio" in case]
    if timed:
        summary["mem_ratio_max"] = max(case["mem_ratio"] for case in timed)
        summary["mem_goal_met"] = summary["mem_ratio_max"] <= 1.2
        at_8k = [case for case in timed if case["tokens"] == 8192]
        if at_8k:
            summary["time_ratio_8k"] = at_8k[0]["time_ratio"]
            summary["time_goal_met"] = summary["time_ratio_8k"] <= 1.5
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
