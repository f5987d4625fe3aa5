"""The demo behind ``make demo``: the whole pipeline, offline, on the committed toy model.

``models/toy-qwen2-vl`` is a small Qwen2-VL trained by ``ocr_heads.toy.train`` to read passkeys
from pages (one character per vision-token tile) and to copy them from text, so its OCR and
retrieval heads are real. The demo runs the commands a user runs (printed as they go):

1. step1: tile-exact passkey pages (``python -m ocr_heads.toy.data``), one set to find heads on and
   a disjoint set to evaluate interventions on;
2. step2: OCR scores (pages), retrieval scores (the same context as text) and prefill-read scores
   (pages; ``--score prefill``);
3. step3: the OCR, retrieval and prefill head lists (``OUT/ocr_heads.json``, ``OUT/retrieval_heads.json``,
   ``OUT/prefill_heads.json``);
4. masking on image and text passkeys: top-k OCR heads, with k the smallest that cuts image accuracy
   by at least 40 points, against k random heads (5 seeds) and the top-k retrieval heads;
5. sink redistribution on the top-2 OCR heads; masking the top-k prefill heads and the union of the top-k
   OCR and prefill heads against as many random heads (5 seeds; ``ocr_heads.demo_prefill``);
6. a one-sample-per-character case-study run (a command check: the toy model knows 5-digit keys only);
7. the report (figures, tables) and ``OUT/headline.json`` with the table printed at the end.

Masking and sink runs go through the library that ``exp_masking.py`` / ``exp_sink.py`` call, in one
process (the equivalent command of each run is logged), so the model loads once.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ocr_heads.demo_prefill import prefill_lines, prefill_masking
from ocr_heads.experiments import RunConfig, load_head_ranking, run_one, select_heads
from ocr_heads.io import read_json, write_json_atomic
from ocr_heads.models import ModelAdapter, load_adapter
from ocr_heads.toy.data import TOY_PROTOCOL

logger = logging.getLogger("demo")

ROOT = Path(__file__).resolve().parents[1]
TOY_MODEL = ROOT / "models" / "toy-qwen2-vl"
MAX_NEW_TOKENS = 8
RANDOM_SEEDS = (0, 1, 2, 3, 4)
DROP_TARGET = 0.40  # top-k OCR masking must cut image EM by this much
RANDOM_LIMIT = 0.10  # ... while k random heads (mean over seeds) cut it by at most this
MAX_K = 10


def run(*args: str) -> None:
    print(f"\n$ python {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


class Masking:
    """Masking / sink runs on the eval samples, one adapter for all (results under ``out``)."""

    def __init__(self, adapter: ModelAdapter, model_id: str, data: Path, n: int, out: Path) -> None:
        self.adapter, self.model_id, self.data, self.n, self.out = adapter, model_id, data, n, out
        shape = adapter.shape
        self.layers, self.heads = shape.num_layers, shape.num_heads

    def em(self, dataset: str, task: str, head_set: str, heads: list[str], seed: int = 0,
           heads_path: Path | None = None, experiment: str = "masking", beta: float | None = None) -> float:
        cfg = RunConfig(experiment, self.model_id, dataset, task, head_set, len(heads), seed, heads,
                        str(heads_path) if heads_path else None, beta, str(self.data), self.n, 0, MAX_NEW_TOKENS)
        flags = {"none": "", "top": " --do_masking", "random": " --do_masking --is_all_random",
                 "sink_top": " --unmasking"}[head_set]
        script = "exp_sink.py" if experiment == "sink" else "exp_masking.py"
        logger.info("= %s --datasets %s --task %s --num_of_masking_head %d --seed %d%s  [heads: %s]", script,
                    dataset, task, len(heads), seed, flags, ", ".join(heads) or "none")
        return float(run_one(self.adapter, cfg, self.out)["metrics"]["em"])

    def both(self, task: str, head_set: str, heads: list[str], seed: int = 0, heads_path: Path | None = None
             ) -> dict[str, float]:
        return {"image_em": self.em("passkey", task, head_set, heads, seed, heads_path),
                "text_em": self.em("passkey_text", task, head_set, heads, seed, heads_path)}


def masking_table(m: Masking, ocr_path: Path, retrieval_path: Path) -> dict:
    """Baseline, the k sweep of top OCR heads, and at the chosen k: random (5 seeds) and retrieval heads."""
    ocr = load_head_ranking(ocr_path)
    retrieval = load_head_ranking(retrieval_path)
    base = m.both("image", "none", [])
    sweep, k = [], None
    for size in range(1, min(len(ocr), MAX_K) + 1):
        image_em = m.em("passkey", "image", "top", ocr[:size], heads_path=ocr_path)
        sweep.append({"k": size, "image_em": image_em, "drop": base["image_em"] - image_em})
        if base["image_em"] - image_em >= DROP_TARGET:
            k = size
            break
    if k is None:
        k = len(sweep)
        logger.warning("masking up to %d OCR heads never cut image EM by %.0f points", k, 100 * DROP_TARGET)
    top = m.both("image", "top", ocr[:k], heads_path=ocr_path) if k else None
    randoms = []
    for seed in RANDOM_SEEDS if k else ():
        heads = select_heads("random", k, [], m.layers, m.heads, seed)
        randoms.append({"seed": seed, "heads": heads, **m.both("image", "random", heads, seed)})
    random_mean = None
    if randoms:
        random_mean = {key: statistics.mean(r[key] for r in randoms) for key in ("image_em", "text_em")}
    retrieval_k = min(k or 0, len(retrieval))
    retr = m.both("text", "top", retrieval[:retrieval_k], heads_path=retrieval_path) if retrieval_k else None

    def drop(row: dict | None) -> dict | None:
        if row is None:
            return None
        return {**row, "image_drop": base["image_em"] - row["image_em"], "text_drop": base["text_em"] - row["text_em"]}

    return {"k": k, "baseline": base, "ocr_sweep": sweep,
            "ocr_top_k": drop({"heads": ocr[:k], **top}) if top else None,
            "random_k": drop({**random_mean, "seeds": randoms}) if random_mean else None,
            "retrieval_top_k": drop({"heads": retrieval[:retrieval_k], **retr}) if retr else None}


def sink_rows(m: Masking, ocr_path: Path, k: int = 2, beta: float = 0.4) -> dict | None:
    heads = load_head_ranking(ocr_path)[:k]
    if not heads:
        logger.warning("no OCR heads: sink redistribution skipped")
        return None
    base = m.em("passkey", "image", "none", [], experiment="sink")
    edited = m.em("passkey", "image", "sink_top", heads, heads_path=ocr_path, experiment="sink", beta=beta)
    return {"heads": heads, "beta": beta, "baseline_image_em": base, "image_em": edited}


def _top(path: Path, n: int = 6) -> list[dict]:
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in h.items()}
            for h in read_json(path)["heads"][:n]]


def headline_text(h: dict) -> str:
    t = h["masking"]
    lines = [f"Toy Qwen2-VL ({h['model']}): {h['n_scored']} samples scored in step2, {h['n_eval']} held-out "
             "samples for interventions", "",
             f"OCR heads (step3, {h['n_ocr_heads']}):       "
             + ", ".join(f"{x['head']} {x['score']:.2f}" for x in h["ocr_heads_top"]),
             f"retrieval heads (step3, {h['n_retrieval_heads']}): "
             + ", ".join(f"{x['head']} {x['score']:.2f}" for x in h["retrieval_heads_top"]),
             f"prefill heads (step3, {h['n_prefill_heads']}):   "
             + ", ".join(f"{x['head']} {x['score']:.2f}" for x in h["prefill_heads_top"]), "",
             f"{'heads masked':<34}{'image EM':>10}{'text EM':>10}{'image drop':>12}{'text drop':>11}",
             f"{'none':<34}{t['baseline']['image_em']:>10.3f}{t['baseline']['text_em']:>10.3f}"]
    for key, label in (("ocr_top_k", "top-{k} OCR"), ("random_k", "{k} random (mean of 5 seeds)"),
                       ("retrieval_top_k", "top-{k} retrieval")):
        row = t.get(key)
        if row:
            lines.append(f"{label.format(k=t['k']):<34}{row['image_em']:>10.3f}{row['text_em']:>10.3f}"
                         f"{100 * row['image_drop']:>+11.0f}p{100 * row['text_drop']:>+10.0f}p")
    lines += ["", "k sweep (top OCR heads, image EM): "
              + ", ".join(f"k={r['k']} {r['image_em']:.2f}" for r in t["ocr_sweep"])]
    if (s := h["sink"]) is not None:
        lines.append(f"sink redistribution on {', '.join(s['heads'])} (beta {s['beta']}): image EM "
                     f"{s['baseline_image_em']:.3f} -> {s['image_em']:.3f}")
    lines += ["", *prefill_lines(h["prefill_masking"])]
    lines += ["", "targets: " + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in h["targets"].items())]
    return "\n".join(lines)


def targets(h: dict) -> dict[str, bool]:
    t = h["masking"]
    return {
        "image EM >= 0.90": t["baseline"]["image_em"] >= 0.90,
        "text EM >= 0.95": t["baseline"]["text_em"] >= 0.95,
        "OCR heads found": h["n_ocr_heads"] > 0,
        "retrieval heads found": h["n_retrieval_heads"] > 0,
        "top-k OCR cuts image EM >= 40p": bool(t["ocr_top_k"]) and t["ocr_top_k"]["image_drop"] >= DROP_TARGET,
        "k random cut image EM <= 10p": bool(t["random_k"]) and t["random_k"]["image_drop"] <= RANDOM_LIMIT,
        "top-k prefill heads cut image EM >= 40p": bool(p := h["prefill_masking"])
        and p["prefill_top_k"]["image_drop"] >= DROP_TARGET,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="output folder (default results/demo)")
    parser.add_argument("--model", type=Path, default=TOY_MODEL, help="model dir (default models/toy-qwen2-vl)")
    parser.add_argument("--n", type=int, default=40, help="step1 samples to score heads on (default 40)")
    parser.add_argument("--n-eval", type=int, default=50, help="held-out samples for masking/sink (default 50)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out, model = args.out.resolve(), str(args.model.resolve())
    start = time.perf_counter()
    data, eval_data = out / "data" / "passkey", out / "data" / "passkey_eval"
    run("-m", "ocr_heads.toy.data", "--out", str(data), "--n", str(args.n), "--seed", "1000")
    run("-m", "ocr_heads.toy.data", "--out", str(eval_data), "--n", str(args.n_eval), "--seed", "2000")
    scores = out / "scores"
    common = ["--model_id", model, "--protocol", TOY_PROTOCOL, "--data", str(data), "--out", str(scores),
              "--max_new_tokens", str(MAX_NEW_TOKENS)]
    run("step2_ocr_retrieval_head.py", *common, "--verify-eager")
    run("step2_text_retrieval_head.py", *common, "--verify-eager")
    run("step2_ocr_retrieval_head.py", *common, "--score", "prefill")
    name = Path(model).name
    ocr_path, retrieval_path = out / "ocr_heads.json", out / "retrieval_heads.json"
    run("step3_extracted_heads.py", "--scores", str(scores / "image" / f"{name}_fg.json"), "--out", str(ocr_path))
    run("step3_extracted_heads.py", "--scores", str(scores / "text" / f"{name}_te.json"), "--out",
        str(retrieval_path))
    prefill_path = out / "prefill_heads.json"
    run("step3_extracted_heads.py", "--scores", str(scores / "image" / f"{name}_prefill.json"), "--out",
        str(prefill_path))
    results = out / "results"
    print("\n$ exp_masking.py / exp_sink.py runs (in one process; each run's command is logged)", flush=True)
    adapter = load_adapter(model, protocol=TOY_PROTOCOL)
    masking = Masking(adapter, model, eval_data, args.n_eval, results)
    table = masking_table(masking, ocr_path, retrieval_path)
    sink = sink_rows(masking, ocr_path)
    # Own folders: a run's file name says its head set and k, not whose heads (and the report reads `results`).
    prefill = prefill_masking(*(Masking(adapter, model, eval_data, args.n_eval, out / "results_prefill" / part)
                                for part in ("prefill", "union")), ocr_path, prefill_path, table["k"] or 0,
                              table["baseline"]["image_em"],
                              table["random_k"]["image_em"] if table["random_k"] else None, RANDOM_SEEDS)
    # Case study: a command check only. The toy model was trained on 5-digit keys in its own page layout,
    # so its per-character maps on step1 pages are not findings (the report says which model made them).
    chars = out / "data" / "chars"
    run("step1_passkey.py", "--single-char", "--n", "1", "--lengths", "64", "--out", str(chars))
    run("exp_case.py", "--model_id", model, "--protocol", TOY_PROTOCOL, "--data", str(chars), "--n", "1",
        "--max_new_tokens", "4", "--out", str(results))
    run("-m", "ocr_heads.report", "--scores", str(scores / "image" / f"{name}_fg.json"),
        str(scores / "text" / f"{name}_te.json"), "--results", str(results), "--case",
        str(results / "case" / f"{name}_case.json"), "--out", str(out / "report"))
    headline = {
        "model": name,
        "n_scored": read_json(scores / "image" / f"{name}_fg.meta.json")["n_samples"],
        "n_eval": args.n_eval,
        "n_ocr_heads": len(read_json(ocr_path)["heads"]),
        "n_retrieval_heads": len(read_json(retrieval_path)["heads"]),
        "ocr_heads_top": _top(ocr_path),
        "retrieval_heads_top": _top(retrieval_path),
        "prefill_heads_top": _top(prefill_path),
        "n_prefill_heads": len(read_json(prefill_path)["heads"]),
        "prefill_masking": prefill,
        "masking": table,
        "sink": sink,
    }
    headline["targets"] = targets(headline)
    headline["elapsed_s"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "headline.json", headline)
    print(f"\n{headline_text(headline)}")
    print(f"\nDemo finished in {headline['elapsed_s']:.0f} s. Head lists: {ocr_path}, {retrieval_path}; "
          f"headline: {out / 'headline.json'}; report: {out / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
