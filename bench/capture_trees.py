"""Did a change make capture slower? The capture overhead (time ours/plain) of an older tree and of this
one, measured in alternating processes.

    python bench/capture_trees.py --base ef0307e [--rounds 4] [--length 2048] [--new 16]

Each process imports one tree's ``ocr_heads`` (a ``git worktree`` of ``--base``, or this checkout) and times
greedy ``generate`` on the same tiny Qwen2-VL (random weights, built once by this tree and loaded by both
through ``from_pretrained``) from the same random text prompt, plain and under ``capture``, in pairs
(plain/capture, then capture/plain); it reports the median of its per-pair ratios. The processes run
base/this/base/this ..., so load on this shared machine falls on both trees alike; the script prints every
process's median and, per tree, the median over its processes. Overhead "did not grow" when this tree's
median is within the spread of the base's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside one tree (cwd): only APIs both layouts share (load_adapter, attention.capture).
WORKER = r"""
import json, statistics, sys, time
import torch
from ocr_heads.attention import capture
from ocr_heads.models import load_adapter
model_dir, length, new, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
torch.set_num_threads(1)
adapter = load_adapter(model_dir)
vocab = adapter.model.config.get_text_config().vocab_size
ids = torch.randint(10, min(vocab, 60), (1, length))
mask = torch.ones_like(ids)

def run(captured):
    start = time.perf_counter()
    with torch.no_grad():
        if captured:
            with capture(adapter):
                adapter.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                       do_sample=False)
        else:
            adapter.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                   do_sample=False)
    return time.perf_counter() - start

run(False); run(True)  # warm-up
ratios = []
for i in range(pairs):
    if i % 2 == 0:
        plain = run(False); ours = run(True)
    else:
        ours = run(True); plain = run(False)
    ratios.append(ours / plain)
print(json.dumps({"median": statistics.median(ratios), "ratios": ratios}))
"""


def measure(tree: Path, model: Path, args: argparse.Namespace) -> dict:
    done = subprocess.run([sys.executable, "-c", WORKER, str(model), str(args.length), str(args.new),
                           str(args.pairs)], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=4, help="processes per tree (alternating)")
    parser.add_argument("--pairs", type=int, default=6, help="plain/capture pairs per process")
    parser.add_argument("--length", type=int, default=2048, help="prompt tokens")
    parser.add_argument("--new", type=int, default=16, help="generated tokens")
    args = parser.parse_args()
    from ocr_heads.models.tiny.build import build_tiny_qwen2_vl

    with tempfile.TemporaryDirectory(prefix="capture-trees-") as work:
        model = build_tiny_qwen2_vl(Path(work) / "tiny-qwen2-vl", seed=0)
        base_tree = Path(work) / "base-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(base_tree), args.base], cwd=ROOT, check=True,
                       capture_output=True)
        medians: dict[str, list[float]] = {"base": [], "this": []}
        try:
            for round_ in range(args.rounds):
                for side, tree in (("base", base_tree), ("this", ROOT)):
                    result = measure(tree, model, args)
                    medians[side].append(result["median"])
                    print(f"round {round_ + 1} {side}: ours/plain {result['median']:.3f} "
                          f"(pairs {', '.join(f'{r:.2f}' for r in result['ratios'])})", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=False)
    for side, values in medians.items():
        print(f"{side}: median ours/plain {statistics.median(values):.3f} "
              f"(process medians {min(values):.3f}-{max(values):.3f}; {args.length} prompt tokens, {args.new} new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
