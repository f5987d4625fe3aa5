"""The demo behind ``make demo``: the whole pipeline, offline, on the committed toy model.

``models/toy-qwen2-vl`` is a small Qwen2-VL trained by ``ocr_heads.toy.train`` to read passkeys
from pages (one character per vision-token tile) and to copy them from text, so its OCR and
retrieval heads are real. The demo runs the commands a user runs (printed as they go):

1. step1: tile-exact passkey pages (``python -m ocr_heads.toy.data``) in three disjoint seeded
   splits: one to find heads on, a calibration split to choose k on, a held-out split to report on;
2. step2: OCR scores (pages), retrieval scores (the same context as text) and prefill-read scores
   (pages; ``--score prefill``);
3. step3: the OCR, retrieval and prefill head lists (``OUT/ocr_heads.json``, ``OUT/retrieval_heads.json``,
   ``OUT/prefill_heads.json``);
4. masking on image and text passkeys: k is the smallest number of top OCR heads whose masking cuts
   image accuracy by at least 40 points *on the calibration split*; then, on the held-out split only,
   the top-k OCR heads against k random heads (5 seeds) and the top-k retrieval heads (so whether
   the held-out drop reaches 40 points is a finding, not true by construction);
5. sink redistribution on the top-2 OCR heads (held-out split); the top prefill heads masked at the OCR k
   and at their own k (chosen on the calibration split the same way), and the union of the top OCR and
   prefill heads, each against as many random heads (5 seeds; held-out split; :func:`prefill_masking`);
6. which score's heads matter (``exp_validate.py``'s sweep): every image score's top-k heads masked against
   k random heads (5 seeds), k in 1, 2, 3, 5 chosen per score on the calibration split, the causal gap with
   its 95% interval reported on the held-out split (:func:`validation_rows`);
7. the case study from step2's own events, grouped by the digit each event reads (``exp_case.py
   --from_step2``): real per-digit head maps of the toy model;
8. the report (figures, tables) and ``OUT/headline.json`` with the table printed at the end.

Masking and sink runs go through the library that ``exp_masking.py`` / ``exp_sink.py`` call, in one
process (the equivalent command of each run is logged), so the model loads once.
"""

from __future__ import annotations

import csv
import logging
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ocr_heads.attention.edits import BETA_DEFAULT
from ocr_heads.core.commandline import Parser, count_help, positive_int, setup_logging
from ocr_heads.core.io import read_json, read_jsonl, write_json_atomic
from ocr_heads.core.paths import SAMPLE_LOG, SIDECAR, case_file, model_name
from ocr_heads.core.provenance import model_fingerprint
from ocr_heads.experiments.registry import get_experiment
from ocr_heads.experiments.run import RunConfig, run_one
from ocr_heads.experiments.scored_heads import load_scored_heads
from ocr_heads.experiments.validate import Split, Sweep
from ocr_heads.models import ModelAdapter, load_adapter
from ocr_heads.pipeline.validate import validate, verdict_table
from ocr_heads.scores import all_scores
from ocr_heads.scores.files import named_heads_file, score_file
from ocr_heads.scores.selection import choose_heads, load_head_ranking
from ocr_heads.toy.data import TOY_PROTOCOL

logger = logging.getLogger("demo")

ROOT = Path(__file__).resolve().parents[1]
TOY_MODEL = ROOT / "models" / "toy-qwen2-vl"
MAX_NEW_TOKENS = 8
RANDOM_SEEDS = (0, 1, 2, 3, 4)
# name -> (seed, stream) of the toy data splits; distinct (seed, stream) pairs give disjoint sample ids.
SPLITS = {"scoring": (1000, "heldout"), "calibration": (3000, "calibration"), "heldout": (2000, "heldout")}
DROP_TARGET = 0.40  # top-k OCR masking must cut image EM by this much
RANDOM_LIMIT = 0.10  # ... while k random heads (mean over seeds) cut it by at most this
MAX_K = 10
VALIDATE_KS = (1, 2, 3, 5)  # the sweep's k grid (exp_validate's default grid up to the toy's useful range)


def run(*args: str) -> None:
    print(f"\n$ python {shlex.join(args)}", flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


PHASES = ("toy data", "step2 scores", "step3 head lists", "masking: choose k on the calibration split",
          "masking table on the held-out split", "sink redistribution", "prefill heads: choose k",
          "prefill heads: masking", "which score's heads matter", "path-specific edits", "case study",
          "where the model looks", "report")


class Progress:
    """"phase i/N" and "run j/M" lines (on stderr, with the log), so a newcomer sees how far the demo is."""

    def __init__(self) -> None:
        self.phase, self.run, self.runs = 0, 0, 0

    def start(self, name: str, runs: int = 0) -> None:
        self.phase, self.run, self.runs = PHASES.index(name) + 1, 0, runs
        logger.info("phase %d/%d: %s%s", self.phase, len(PHASES), name, f" ({runs} runs at most)" if runs else "")

    def step(self) -> None:
        self.run += 1
        if self.phase:  # runs made outside the demo's phases (a test's, a user's) have nothing to count against
            logger.info("phase %d/%d, run %d/%d", self.phase, len(PHASES), self.run, self.runs)


class Masking:
    """Masking / sink runs on the eval samples, one adapter for all (results under ``out``)."""

    def __init__(self, adapter: ModelAdapter, model_id: str, data: Path, n: int, out: Path,
                 progress: Progress | None = None) -> None:
        self.adapter, self.model_id, self.data, self.n, self.out = adapter, model_id, data, n, out
        self.progress = progress or Progress()
        self.fingerprint = model_fingerprint(model_id)  # once: every run of this model pins the same files
        shape = adapter.shape
        self.layers, self.heads = shape.num_layers, shape.num_heads

    def em(self, dataset: str, task: str, head_set: str, heads: list[str], seed: int = 0,
           heads_path: Path | None = None, experiment: str = "masking", options: dict[str, float] | None = None
           ) -> float:
        return float(self.summary(dataset, task, head_set, heads, seed, heads_path, experiment, options)
                     ["metrics"]["em"])

    def summary(self, dataset: str, task: str, head_set: str, heads: list[str], seed: int = 0,
                heads_path: Path | None = None, experiment: str = "masking", options: dict[str, float] | None = None,
                mask_mode: str = "output") -> dict:
        """One run's summary (metrics, per-sample predictions); ``mask_mode``: masking's --mask_mode."""
        options = options or {}
        choices = {"mask_mode": mask_mode} if experiment == "masking" else {}
        cfg = RunConfig(experiment, self.model_id, dataset, task, head_set, len(heads), seed, heads,
                        str(heads_path) if heads_path else None, options, str(self.data), self.n, 0, MAX_NEW_TOKENS,
                        protocol=self.adapter.protocol, model_fingerprint=self.fingerprint, choices=choices)
        declared = get_experiment(experiment)
        argv = ["--datasets", dataset, "--task", task]
        if heads:
            argv += ["--num_of_masking_head", str(len(heads)), "--seed", str(seed)]
        argv += [*declared.flags(head_set).split(), *(f"--{name}={value:g}" for name, value in options.items())]
        if mask_mode != "output":
            argv += ["--mask_mode", mask_mode]
        self.progress.step()
        logger.info("= %s %s  [heads: %s]", declared.script, shlex.join(argv), ", ".join(heads) or "none")
        return run_one(self.adapter, cfg, self.out)

    def both(self, task: str, head_set: str, heads: list[str], seed: int = 0, heads_path: Path | None = None
             ) -> dict[str, float]:
        return {"image_em": self.em("passkey", task, head_set, heads, seed, heads_path),
                "text_em": self.em("passkey_text", task, head_set, heads, seed, heads_path)}


# The prefill-read rows: the toy model reads digits 1-2 with layer-1 heads at the rows that produce them (what
# the OCR score credits) and digits 3-5 with layer-0 heads from the question's rows during the prefill (what
# the prefill score credits; docs/toy_model.md). Masking either set should break exact match; these rows
# show how much each does beside random heads of the same size.


def prefill_masking(top: Masking, union: Masking, ocr_path: Path, prefill_path: Path, k: int, k_prefill: int,
                    base: float, random_k: float | None, seeds: tuple[int, ...]) -> dict | None:
    """Held-out image EM with the top prefill heads masked, at the OCR rows' ``k`` (control: the table's k
    random heads, ``random_k``) and at ``k_prefill`` (chosen on the calibration split as the OCR k is;
    control: as many random heads), and with the union of the top-k OCR and top-``k_prefill`` prefill heads
    masked (control: as many random heads). Controls are means over ``seeds``. ``top`` and ``union`` write to
    separate folders (a run's file name holds its head set and k, not whose heads); ``base``: unmasked EM."""
    ranking = load_head_ranking(prefill_path)
    if not ranking or not k:
        return None

    def masked(m: Masking, heads: list[str], path: Path | None = None) -> dict:
        em = m.em("passkey", "image", "top", heads, heads_path=path)
        return {"heads": heads, "image_em": em, "image_drop": base - em}

    def control(m: Masking, size: int) -> dict:
        ems = [m.em("passkey", "image", "random", choose_heads("random", size, [], m.layers, m.heads, seed), seed)
               for seed in seeds]
        mean = statistics.mean(ems)
        return {"k": size, "image_em": mean, "image_drop": base - mean, "seeds": dict(zip(seeds, ems, strict=True))}

    both = load_head_ranking(ocr_path)[:k]
    both += [head for head in ranking[:k_prefill] if head not in both]
    return {"k": k, "k_prefill": k_prefill, "baseline_image_em": base, "random_k_image_em": random_k,
            "prefill_top_k": masked(top, ranking[:k], prefill_path),
            "prefill_top_k_prefill": masked(top, ranking[:k_prefill], prefill_path),
            "random_k_prefill": control(top, k_prefill),
            "union": masked(union, both), "random_union": control(union, len(both))}


def prefill_lines(row: dict | None) -> list[str]:
    """Headline lines for :func:`prefill_masking`'s result (image EM; drops in points)."""
    if row is None:
        return ["prefill-read heads: none selected (no masking rows)"]
    k, kp, union = row["k"], row["k_prefill"], row["union"]
    seeds = len(row["random_union"]["seeds"])
    lines = [f"k = {kp} for the prefill heads, chosen on the calibration split as k is for the OCR heads",
             f"prefill heads masked: {', '.join(row['prefill_top_k_prefill']['heads'])}; union: "
             f"{', '.join(union['heads'])}",
             f"{'heads masked':<34}{'image EM':>10}{'image drop':>12}",
             f"{'none':<34}{row['baseline_image_em']:>10.3f}"]
    cells = [(f"top-{k} prefill", row["prefill_top_k"]["image_em"])]
    if row["random_k_image_em"] is not None:
        cells.append((f"{k} random (mean of {seeds} seeds)", row["random_k_image_em"]))
    cells += [(f"top-{kp} prefill", row["prefill_top_k_prefill"]["image_em"]),
              (f"{kp} random (mean of {seeds} seeds)", row["random_k_prefill"]["image_em"]),
              (f"top-{k} OCR + top-{kp} prefill", union["image_em"]),
              (f"{row['random_union']['k']} random (mean of {seeds} seeds)", row["random_union"]["image_em"])]
    for label, em in cells:
        lines.append(f"{label:<34}{em:>10.3f}{100 * (row['baseline_image_em'] - em):>+11.0f}p")
    for key in ("random_k_prefill", "random_union"):
        lines.append(f"{row[key]['k']} random heads per seed (image EM): "
                     + ", ".join(f"seed {seed} {em:.2f}" for seed, em in row[key]["seeds"].items()))
    return lines


def choose_k(m: Masking, ocr: list[str], ocr_path: Path) -> dict:
    """On the calibration split: the smallest k whose top-k OCR heads cut image EM by DROP_TARGET."""
    base = m.em("passkey", "image", "none", [])
    sweep, k = [], None
    for size in range(1, min(len(ocr), MAX_K) + 1):
        image_em = m.em("passkey", "image", "top", ocr[:size], heads_path=ocr_path)
        sweep.append({"k": size, "image_em": image_em, "drop": base - image_em})
        if base - image_em >= DROP_TARGET:
            k = size
            break
    if k is None:
        k = len(sweep)
        logger.warning("masking up to %d top heads of %s never cut calibration image EM by %.0f points", k,
                       ocr_path.name, 100 * DROP_TARGET)
    return {"n": m.n, "baseline_image_em": base, "sweep": sweep, "k": k}


def masking_table(m: Masking, ocr_path: Path, retrieval_path: Path, k: int) -> dict:
    """On the held-out split: baseline, and at the given k the top OCR heads, random heads (5 seeds) and
    the top retrieval heads."""
    ocr = load_head_ranking(ocr_path)
    retrieval = load_head_ranking(retrieval_path)
    base = m.both("image", "none", [])
    top = m.both("image", "top", ocr[:k], heads_path=ocr_path) if k else None
    randoms = []
    for seed in RANDOM_SEEDS if k else ():
        heads = choose_heads("random", k, [], m.layers, m.heads, seed)
        randoms.append({"seed": seed, "heads": heads, **m.both("image", "random", heads, seed)})
    random_mean = None
    if randoms:
        random_mean = {key: statistics.mean(r[key] for r in randoms) for key in ("image_em", "text_em")}
    retrieval_k = min(k, len(retrieval))
    retr = m.both("text", "top", retrieval[:retrieval_k], heads_path=retrieval_path) if retrieval_k else None

    def drop(row: dict | None) -> dict | None:
        if row is None:
            return None
        return {**row, "image_drop": base["image_em"] - row["image_em"], "text_drop": base["text_em"] - row["text_em"]}

    return {"k": k, "n": m.n, "baseline": base,
            "ocr_top_k": drop({"heads": ocr[:k], **top}) if top else None,
            "random_k": drop({**random_mean, "seeds": randoms}) if random_mean else None,
            "retrieval_top_k": drop({"heads": retrieval[:retrieval_k], **retr}) if retr else None}


def sink_rows(m: Masking, ocr_path: Path, k: int = 2, beta: float = BETA_DEFAULT) -> dict | None:
    heads = load_head_ranking(ocr_path)[:k]
    if not heads:
        logger.warning("no OCR heads: sink redistribution skipped")
        return None
    base = m.em("passkey", "image", "none", [], experiment="sink")
    edited = m.em("passkey", "image", "sink_top", heads, heads_path=ocr_path, experiment="sink",
                options={"beta": beta})
    return {"heads": heads, "beta": beta, "baseline_image_em": base, "image_em": edited}


def image_scores() -> list[str]:
    """Every registered image score: step2 scores them on the heads split, the sweep validates them."""
    return [name for name, score in all_scores().items() if score.modality == "image"]


def validation_rows(adapter: ModelAdapter, model: str, fingerprint: str, score_paths: list[Path], calib_data: Path,
                    n_calib: int, eval_data: Path, n_eval: int, out: Path) -> list[dict]:
    """exp_validate's sweep on the loaded toy: each score's k chosen on the calibration split, its causal gap
    (top-k drop minus the mean drop of k random heads, 5 seeds) with a 95% interval on the held-out split. The
    disjoint-random control is left to ``exp_validate.py`` (it would double the demo's runs)."""
    sweep = Sweep(adapter, model, fingerprint, "mask", list(VALIDATE_KS), list(RANDOM_SEEDS), MAX_NEW_TOKENS,
                  batch_size=8, disjoint_seeds=[])
    scored = [load_scored_heads(path) for path in score_paths]
    tables = validate(sweep, scored, [Split("heldout", "passkey", str(eval_data), n_eval)],
                      Split("calibration", "passkey", str(calib_data), n_calib), out)
    return tables["passkey"]


# Path-specific edits (issue 24): the same head sets cut off the image only (their attention to image tokens
# blocked, the rest renormalised) instead of zeroed, with per-digit exact rates, and the layer-1 OCR heads
# redirected from one digit's tiles to another's (exp_redirect.py). Few seeds and samples: the demo runs in CI.
PATH_SEEDS = (0, 1, 2)
REDIRECT_N = 5


def digit_rates(summary: dict) -> list[float]:
    """Per answer position, the fraction of samples whose prediction has the gold digit there."""
    rows = summary["predictions"]
    width = max((len(row["golds"][0]) for row in rows), default=0)
    return [statistics.mean(len(row["prediction"]) > i and row["prediction"][i] == row["golds"][0][i]
                            for row in rows) if rows else 0.0 for i in range(width)]


def image_keys_rows(m: Masking, ranking_path: Path, k: int, base: dict) -> dict | None:
    """Top-k heads of a list and k random heads (PATH_SEEDS), zeroed and cut off the image: image EM and
    per-digit rates on the held-out split."""
    heads = load_head_ranking(ranking_path)[:k]
    if not heads:
        return None

    def row(head_set: str, chosen: list[str], seed: int, mode: str) -> dict:
        summary = m.summary("passkey", "image", head_set, chosen, seed, ranking_path if head_set == "top" else None,
                            mask_mode=mode)
        return {"image_em": summary["metrics"]["em"], "digits": digit_rates(summary)}

    out = {"heads": heads, "baseline": {"image_em": base["metrics"]["em"], "digits": digit_rates(base)}}
    for mode in ("output", "image_keys"):
        out[f"top_{mode}"] = row("top", heads, 0, mode)
        out[f"random_{mode}"] = {seed: row("random", choose_heads("random", k, [], m.layers, m.heads, seed), seed,
                                           mode) for seed in PATH_SEEDS}
    return out


def path_lines(name: str, row: dict | None) -> list[str]:
    if not row:
        return []

    def digits(values: list[float]) -> str:
        return " ".join(f"{v:.2f}" for v in values)

    lines = [f"{name} ({', '.join(row['heads'])}): image EM, then exact rate of digits 1-5",
             f"  {'none':<34}{row['baseline']['image_em']:>6.2f}   {digits(row['baseline']['digits'])}"]
    for mode, label in (("output", "zeroed"), ("image_keys", "cut off the image")):
        top = row[f"top_{mode}"]
        lines.append(f"  {'top, ' + label:<34}{top['image_em']:>6.2f}   {digits(top['digits'])}")
        for seed, rand in row[f"random_{mode}"].items():
            lines.append(f"  {f'random seed {seed}, ' + label:<34}{rand['image_em']:>6.2f}   {digits(rand['digits'])}")
    return lines


def redirect_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["redirect (exp_redirect.py, steered / kept / other, n = character events):"]
    lines += [f"  {r['head_set']:<7} k={r['k']} alpha={r['alpha']} seed={r['seed'] or '-':<2} n={r['n']:<4}"
              + (" / ".join(f"{float(r[name]):.2f}" for name in ("steered", "kept", "other")) if r["steered"]
                 else "no event") for r in rows]
    return lines


def _top(path: Path, n: int = 6) -> list[dict]:
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in h.items()}
            for h in read_json(path)["heads"][:n]]


def headline_text(h: dict) -> str:
    t, c = h["masking"], h["calibration"]
    lines = [f"Toy Qwen2-VL ({h['model']}): {h['n_scored']} samples scored in step2, {c['n']} calibration "
             f"samples to choose k, {t['n']} held-out samples for the interventions (disjoint splits)", "",
             f"OCR heads (step3, {h['n_ocr_heads']}):       "
             + ", ".join(f"{x['head']} {x['score']:.2f}" for x in h["ocr_heads_top"]),
             f"retrieval heads (step3, {h['n_retrieval_heads']}): "
             + ", ".join(f"{x['head']} {x['score']:.2f}" for x in h["retrieval_heads_top"]),
             f"prefill heads (step3, {h['n_prefill_heads']}):   "
             + ", ".join(f"{x['head']} {x['score']:.2f}" for x in h["prefill_heads_top"]), "",
             f"k = {t['k']}: the smallest k whose top-k OCR heads cut calibration image EM by >= "
             f"{100 * DROP_TARGET:.0f}p (calibration EM {c['baseline_image_em']:.2f}; "
             + ", ".join(f"k={r['k']} {r['image_em']:.2f}" for r in c["sweep"]) + ")", "",
             f"held-out (n={t['n']})",
             f"{'heads masked':<34}{'image EM':>10}{'text EM':>10}{'image drop':>12}{'text drop':>11}",
             f"{'none':<34}{t['baseline']['image_em']:>10.3f}{t['baseline']['text_em']:>10.3f}"]
    for key, label in (("ocr_top_k", "top-{k} OCR"), ("random_k", "{k} random (mean of 5 seeds)"),
                       ("retrieval_top_k", "top-{k} retrieval")):
        row = t.get(key)
        if row:
            lines.append(f"{label.format(k=t['k']):<34}{row['image_em']:>10.3f}{row['text_em']:>10.3f}"
                         f"{100 * row['image_drop']:>+11.0f}p{100 * row['text_drop']:>+10.0f}p")
    if t.get("random_k"):
        # The control's spread, not only its mean: one line per seed.
        lines.append("random heads per seed (image EM / text EM): " + ", ".join(
            f"seed {r['seed']} {r['image_em']:.2f}/{r['text_em']:.2f}" for r in t["random_k"]["seeds"]))
    lines.append(f"every EM is over the same {h['n_eval']} held-out samples (one sample = {100 / h['n_eval']:.0f} "
                 f"points); heads were scored on {h['n_scored']} other samples")
    if (s := h["sink"]) is not None:
        lines.append("")
        lines.append(f"sink redistribution on {', '.join(s['heads'])} (beta {s['beta']}): image EM "
                     f"{s['baseline_image_em']:.3f} -> {s['image_em']:.3f}")
    lines += ["", f"held-out (n={t['n']}), prefill-read heads", *prefill_lines(h["prefill_masking"])]
    if h.get("validation"):
        lines += ["", f"which score's heads matter (held-out, n={t['n']}; k in {', '.join(map(str, VALIDATE_KS))} "
                  "chosen per score on the calibration split; gap = top-k drop minus the mean drop of k random heads, "
                  "5 seeds; 95% bootstrap interval)", verdict_table(h["validation"])]
    if (p := h.get("path_specific")) is not None:
        lines += ["", f"held-out (n={t['n']}), path-specific edits (mean and per seed)",
                  *path_lines("OCR heads", p["ocr"]), *path_lines("prefill heads", p["prefill"]),
                  *redirect_lines(Path(p["redirect_csv"]))]
    lines += ["", "targets: " + ", ".join(f"{name} {'met' if ok else 'NOT met'}" for name, ok in h["targets"].items())]
    return "\n".join(lines)


def targets(h: dict) -> dict[str, bool]:
    t = h["masking"]
    return {
        "image EM >= 0.90": t["baseline"]["image_em"] >= 0.90,
        "text EM >= 0.95": t["baseline"]["text_em"] >= 0.95,
        "OCR heads found": h["n_ocr_heads"] > 0,
        "retrieval heads found": h["n_retrieval_heads"] > 0,
        "top-k OCR cuts held-out image EM >= 40p": bool(t["ocr_top_k"]) and t["ocr_top_k"]["image_drop"] >= DROP_TARGET,
        "k random cut held-out image EM <= 10p": bool(t["random_k"]) and t["random_k"]["image_drop"] <= RANDOM_LIMIT,
        "top-k prefill (own k) cuts held-out image EM >= 40p": bool(p := h["prefill_masking"])
        and p["prefill_top_k_prefill"]["image_drop"] >= DROP_TARGET,
    }


def main(argv: list[str] | None = None) -> None:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="output folder (default results/demo)")
    parser.add_argument("--model_id", type=Path, default=TOY_MODEL, help="model dir (default models/toy-qwen2-vl)")
    parser.add_argument("--n", type=positive_int, default=40,
                        help=count_help("in total, to score heads on (step2)", 40))
    parser.add_argument("--n-calib", type=positive_int, default=50,
                        help="calibration samples to choose k on (an integer >= 1; default 50)")
    parser.add_argument("--n-eval", type=positive_int, default=50,
                        help="held-out samples for masking/sink (an integer >= 1; default 50)")
    args = parser.parse_args(argv)
    setup_logging()
    out, model = args.out.resolve(), str(args.model_id.resolve())
    start, cpu_start = time.perf_counter(), time.process_time()
    progress = Progress()
    progress.start("toy data", len(SPLITS))
    sizes = {"scoring": args.n, "calibration": args.n_calib, "heldout": args.n_eval}
    dirs = {"scoring": out / "data" / "passkey", "calibration": out / "data" / "passkey_calib",
            "heldout": out / "data" / "passkey_eval"}
    for name, (seed, stream) in SPLITS.items():
        run("-m", "ocr_heads.toy.data", "--out", str(dirs[name]), "--n", str(sizes[name]), "--seed", str(seed),
            "--split", stream)
    data, calib_data, eval_data = dirs["scoring"], dirs["calibration"], dirs["heldout"]
    scores = out / "scores"
    common = ["--model_id", model, "--protocol", TOY_PROTOCOL, "--data", str(data), "--out", str(scores),
              "--max_new_tokens", str(MAX_NEW_TOKENS)]
    progress.start("step2 scores", 3)
    run("step2_ocr_retrieval_head.py", *common, "--verify-eager")
    run("step2_text_retrieval_head.py", *common, "--verify-eager")
    # The other image scores (prefill-read, the design-space variants) in one pass over the samples.
    run("step2_ocr_retrieval_head.py", *common, "--score", *(score for score in image_scores() if score != "ocr"))
    name = model_name(model)
    score_files = {score: score_file(scores, name, score) for score in ("ocr", "retrieval", "prefill")}
    head_lists = {score: named_heads_file(out, score) for score in score_files}
    progress.start("step3 head lists", len(score_files))
    for score, path in score_files.items():
        run("step3_extracted_heads.py", "--scores", str(path), "--out", str(head_lists[score]))
    ocr_path, retrieval_path, prefill_path = head_lists["ocr"], head_lists["retrieval"], head_lists["prefill"]
    results = out / "results"
    print("\n$ exp_masking.py / exp_sink.py runs (in one process; each run's command is logged)", flush=True)
    adapter = load_adapter(model, protocol=TOY_PROTOCOL)
    # Calibration runs go to their own folder: the report and masking.csv hold held-out runs only.
    ocr, retrieval, prefill_ranking = (load_head_ranking(path) for path in (ocr_path, retrieval_path, prefill_path))
    progress.start(PHASES[3], 1 + min(len(ocr), MAX_K))
    calibration = choose_k(Masking(adapter, model, calib_data, args.n_calib, out / "calibration", progress),
                           ocr, ocr_path)
    masking = Masking(adapter, model, eval_data, args.n_eval, results, progress)
    k = calibration["k"]
    progress.start(PHASES[4], 2 * (1 + (1 + len(RANDOM_SEEDS) if k else 0) + (min(k, len(retrieval)) > 0)))
    table = masking_table(masking, ocr_path, retrieval_path, k)
    progress.start(PHASES[5], 2)
    sink = sink_rows(masking, ocr_path)
    # Own folders: a run's file name says its head set and k, not whose heads (and the report reads `results`).
    progress.start(PHASES[6], 1 + min(len(prefill_ranking), MAX_K))
    prefill_calibration = choose_k(Masking(adapter, model, calib_data, args.n_calib, out / "calibration_prefill",
                                           progress), prefill_ranking, prefill_path)
    progress.start(PHASES[7], 3 + 2 * len(RANDOM_SEEDS))
    prefill = prefill_masking(*(Masking(adapter, model, eval_data, args.n_eval, out / "results_prefill" / part,
                                        progress)
                                for part in ("prefill", "union")), ocr_path, prefill_path, table["k"],
                              prefill_calibration["k"], table["baseline"]["image_em"],
                              table["random_k"]["image_em"] if table["random_k"] else None, RANDOM_SEEDS)
    progress.start("which score's heads matter")
    validation = validation_rows(adapter, model, masking.fingerprint,
                                 [score_file(scores, name, score) for score in image_scores()], calib_data,
                                 args.n_calib, eval_data, args.n_eval, out / "validate")
    progress.start("path-specific edits", 2 * 2 * (1 + len(PATH_SEEDS)) + 1)
    base = masking.summary("passkey", "image", "none", [])
    redirect_out = results  # the report reads results/redirect.csv
    path_specific = {"ocr": image_keys_rows(masking, ocr_path, table["k"], base),
                     "prefill": image_keys_rows(Masking(adapter, model, eval_data, args.n_eval,
                                                        out / "results_prefill" / "image_keys", progress),
                                                prefill_path, prefill_calibration["k"], base),
                     "redirect_csv": str(redirect_out / "redirect.csv")}
    if table["k"]:
        run("exp_redirect.py", "--model_id", model, "--protocol", TOY_PROTOCOL, "--heads", str(ocr_path), "--data",
            str(eval_data), "--k", str(table["k"]), "--alpha", "1.0", "--seeds", *map(str, PATH_SEEDS), "--n",
            str(min(REDIRECT_N, args.n_eval)), "--out", str(redirect_out))
    # Case study from step2's events: the toy model reads 5-digit keys in its own page layout, not the
    # single-character step1 pages, so its per-digit maps come from the run that found its heads.
    progress.start("case study", 1)
    run("exp_case.py", "--from_step2", str(score_file(scores, name, "ocr", SAMPLE_LOG)), "--out", str(results))
    # One held-out page through `look`: every answer token's attention on the page, the top OCR heads' overlays
    # and the viewer (the report links it).
    progress.start("where the model looks", 1)
    first = next(read_jsonl(eval_data / "samples.jsonl"))["id"]
    run("-m", "ocr_heads.look", "--model_id", model, "--protocol", TOY_PROTOCOL, "--data", str(eval_data),
        "--sample", first, "--heads", ",".join(ocr[: table["k"]]), "--out", str(out / "look"))
    progress.start("report", 1)
    run("-m", "ocr_heads.report", "--scores", str(score_files["ocr"]), str(score_files["retrieval"]), "--results",
        str(results), "--case", str(case_file(results, name)), "--look", str(out / "look"),
        "--validate", str(out / "validate"), "--out",
        str(out / "report"))
    headline = {
        "model": name,
        "n_scored": read_json(score_file(scores, name, "ocr", SIDECAR))["n_samples"],
        "n_calib": args.n_calib,
        "n_eval": args.n_eval,
        "n_ocr_heads": len(read_json(ocr_path)["heads"]),
        "n_retrieval_heads": len(read_json(retrieval_path)["heads"]),
        "ocr_heads_top": _top(ocr_path),
        "retrieval_heads_top": _top(retrieval_path),
        "n_prefill_heads": len(read_json(prefill_path)["heads"]),
        "prefill_heads_top": _top(prefill_path),
        "prefill_calibration": prefill_calibration,
        "prefill_masking": prefill,
        "calibration": calibration,
        "masking": table,
        "sink": sink,
        "validation": validation,
        "path_specific": path_specific,
    }
    headline["targets"] = targets(headline)
    headline["elapsed_s"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "headline.json", headline)
    print(f"\n{headline_text(headline)}")
    # CPU seconds beside wall time: on a loaded machine wall time says little (this process and its steps).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu_start + children.ru_utime + children.ru_stime
    logger.info("demo took %.0f s wall, %.0f s CPU (this process and its step subprocesses) on %d CPU cores",
                headline["elapsed_s"], cpu, os.cpu_count() or 0)
    print(f"\nDemo finished in {headline['elapsed_s']:.0f} s. Head lists: {ocr_path}, {retrieval_path}; "
          f"headline: {out / 'headline.json'}; report: {out / 'report' / 'index.html'}")


if __name__ == "__main__":
    main()
