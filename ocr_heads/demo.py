"""The demo behind ``make demo``: the whole pipeline, offline, on a tiny model built locally.

Runs the same commands a user runs (printed as they go): build the tiny Qwen2-VL, step1 passkey and
NIAH pages, step2 OCR and retrieval scores, step3 head lists, masking / sink / case-study runs, and
the report. The tiny model has
random weights, so it has no OCR heads: the numbers show that the pipeline runs end to end, not a
finding.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> None:
    command = [sys.executable, *args]
    print(f"\n$ python {shlex.join(args)}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="where everything goes (default demo_out)")
    parser.add_argument("--n", type=int, default=4, help="samples per context length")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    start = time.perf_counter()
    model = out / "models" / "tiny-qwen2-vl"
    if not (model / "config.json").is_file():
        run("-m", "ocr_heads.models.tiny", "--out", str(model))
    data = out / "data"
    run("step1_passkey.py", "--n", str(args.n), "--lengths", "256", "512", "--out", str(data / "passkey"))
    run("step1_niah.py", "--n", str(args.n), "--lengths", "256", "--out", str(data / "niah"))
    scores = out / "scores"
    common = ["--model_id", str(model), "--data", str(data / "passkey"), "--out", str(scores),
              "--max_new_tokens", "8"]
    run("step2_ocr_retrieval_head.py", *common, "--verify-eager")
    run("step2_text_retrieval_head.py", *common, "--verify-eager")
    heads = out / "heads"
    for kind, suffix in (("image", "fg"), ("text", "te")):
        run("step3_extracted_heads.py", "--scores", str(scores / kind / f"tiny-qwen2-vl_{suffix}.json"),
            "--rule", "documented", "--out", str(heads / f"tiny-qwen2-vl_{suffix}_documented.json"))
    results = out / "results"
    exp = ["--model_id", str(model), "--data", f"passkey={data / 'passkey'}", "--n", str(args.n), "--max_new_tokens",
           "8", "--out", str(results), "--datasets", "passkey", "--num_of_masking_head", "2"]
    run("exp_masking.py", *exp, "--task", "text", "--heads", str(heads / "tiny-qwen2-vl_te_documented.json"))
    run("exp_masking.py", *exp, "--task", "text", "--heads", str(heads / "tiny-qwen2-vl_te_documented.json"),
        "--do_masking")
    run("exp_masking.py", *exp, "--task", "text", "--heads", str(heads / "tiny-qwen2-vl_te_documented.json"),
        "--do_masking", "--is_all_random")
    run("exp_sink.py", *exp, "--heads", str(heads / "tiny-qwen2-vl_te_documented.json"))
    run("exp_sink.py", *exp, "--heads", str(heads / "tiny-qwen2-vl_te_documented.json"), "--unmasking")
    run("step1_passkey.py", "--single-char", "--n", "1", "--lengths", "64", "--out", str(data / "chars"))
    run("exp_case.py", "--model_id", str(model), "--data", str(data / "chars"), "--n", "1", "--max_new_tokens", "4",
        "--out", str(results))
    report = out / "report"
    run("-m", "ocr_heads.report", "--scores", str(scores / "image" / "tiny-qwen2-vl_fg.json"),
        str(scores / "text" / "tiny-qwen2-vl_te.json"), "--results", str(results),
        "--case", str(results / "case" / "tiny-qwen2-vl_case.json"), "--out", str(report))
    for table in ("masking.csv", "sink.csv"):
        print(f"\n{results / table}:\n{(results / table).read_text()}")
    print(f"\nDemo finished in {time.perf_counter() - start:.0f} s. Report: {report / 'index.html'}")
    print("The tiny model has random weights: it does not read the pages, so its head scores are noise "
          "(mostly zero); they show the pipeline works, not a finding.")


if __name__ == "__main__":
    main()
