"""exp_validate: the causal-gap arithmetic against hand-computed values, the score similarity, and the command on
a tiny random model (every output, resume, refusal, transfer to another task, each bad input's one error line).

The tiny model has random weights: its numbers are noise; these tests check the machinery, never a finding."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from ocr_heads.experiments.causal_gap import (
    MIN_BOOTSTRAP_SAMPLES,
    choose_k,
    gap_area,
    gap_at_k,
    interval,
    k_grid,
    resample_indices,
    sample_gaps,
)
from ocr_heads.report.sections.validation import similarity_rows

# ---------------------------------------------------------------- arithmetic on a hand-made per-sample table

# Four samples: baseline EM, the top-k run, two random seeds.
BASE = [1, 1, 1, 0]
TOP = [0, 0, 1, 0]
RANDOMS = [[1, 1, 1, 0], [1, 0, 1, 0]]
# Three resamples of the four sample indices, written out so every mean below is computed by hand.
DRAWS = np.array([[0, 0, 0, 0], [2, 3, 2, 3], [0, 1, 2, 3]])


def test_per_sample_gap_by_hand() -> None:
    # sample 0: top drop 1, random drops 0 and 0 -> 1; sample 1: 1 - (0 + 1)/2 = 0.5; samples 2, 3: 0.
    assert sample_gaps(BASE, TOP, RANDOMS).tolist() == [1.0, 0.5, 0.0, 0.0]


def test_gap_and_bootstrap_interval_by_hand() -> None:
    row = gap_at_k(3, BASE, TOP, RANDOMS, DRAWS)
    assert row.top_drop == 0.5  # (1 + 1 + 0 + 0) / 4
    assert row.random_drop == 0.125  # seed 0: 0; seed 1: 1/4; mean 1/8
    assert row.gap.value == 0.375
    # Resample means: [1,1,1,1] -> 1; [0,0,0,0] -> 0; all four -> 0.375. Percentiles with linear interpolation
    # over the sorted (0, 0.375, 1): 2.5% -> 0 + 0.05 * 0.375; 97.5% -> 0.375 + 0.95 * 0.625.
    assert row.gap.low == pytest.approx(0.01875)
    assert row.gap.high == pytest.approx(0.96875)
    assert row.n == 4 and row.k == 3


def test_area_over_k_by_hand() -> None:
    # Per-sample gaps at k=1: [1, .5, 0, 0]; at k=3: [0, 0, 1, 1]. Trapezoid over k = 1..3 (width 2): each
    # sample's area is (g1 + g3) / 2 * 2 = g1 + g3, i.e. [1, .5, 1, 1].
    per_sample = {1: np.array([1.0, 0.5, 0.0, 0.0]), 3: np.array([0.0, 0.0, 1.0, 1.0])}
    area = gap_area([1, 3], per_sample, DRAWS)
    assert area.value == pytest.approx((1 + 0.5 + 1 + 1) / 4)  # mean of [1, .5, 1, 1]
    # resamples: [1,1,1,1] -> 1; [1,1,1,1] (indices 2, 3) -> 1; all -> 0.875
    assert (area.low, area.high) == pytest.approx((0.875 + 0.05 * 0.125, 1.0))
    assert gap_area([2], {2: np.ones(4)}, DRAWS).value == 0.0  # one k: no width


def test_interval_is_paired_over_samples() -> None:
    """The same draw of sample indices applies to every run: a top-k run that equals a random run sample by sample
    has gap 0 in every resample, so its interval is exactly (0, 0) even though EM varies across samples."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 2, 40)
    edited = rng.integers(0, 2, 40)
    row = gap_at_k(2, base, edited, [edited, edited], resample_indices(40, 500, 1))
    assert (row.gap.value, row.gap.low, row.gap.high) == (0.0, 0.0, 0.0)
    assert row.top_drop == pytest.approx(np.mean(base - edited))


def test_interval_matches_a_plain_loop() -> None:
    values = np.random.default_rng(0).normal(size=25)
    draws = resample_indices(25, 300, 7)
    means = sorted(sum(values[i] for i in draw) / 25 for draw in draws)
    estimate = interval(values, draws)
    assert estimate.low == pytest.approx(np.percentile(means, 2.5))
    assert estimate.high == pytest.approx(np.percentile(means, 97.5))


def test_bootstrap_minimum_and_k_choice() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_BOOTSTRAP_SAMPLES}"):
        resample_indices(MIN_BOOTSTRAP_SAMPLES - 1)
    draws = np.zeros((1, 4), dtype=int)
    gaps = [gap_at_k(k, BASE, top, RANDOMS, draws) for k, top in ((1, [1, 1, 1, 0]), (2, TOP), (5, TOP))]
    assert choose_k(gaps).k == 2  # 2 and 5 tie at the largest gap: the smaller k
    assert k_grid([20, 1, 5, 2, 5], 4) == ([1, 2], [5, 20])


def test_similarity_by_hand() -> None:
    rankings = {"a": ["l0_h0", "l0_h1", "l1_h0", "l1_h1"], "b": ["l0_h1", "l1_h1", "l0_h0", "l1_h0"]}
    values = {"a": {"l0_h0": 4, "l0_h1": 3, "l1_h0": 2, "l1_h1": 1},
              "b": {"l0_h0": 2, "l0_h1": 4, "l1_h0": 1, "l1_h1": 3}}
    found = similarity_rows(rankings, values, [1, 2, 3, 9])
    rows = {(r["score_a"], r["score_b"], r["measure"], r["k"]): r["value"] for r in found}
    assert rows[("a", "b", "jaccard", 1)] == 0.0  # {l0_h0} vs {l0_h1}
    assert rows[("a", "b", "jaccard", 2)] == pytest.approx(1 / 3)  # {00, 01} vs {01, 11}: 1 shared of 3
    assert rows[("a", "b", "jaccard", 3)] == pytest.approx(2 / 4)  # {00, 01, 10} vs {01, 11, 00}
    assert ("a", "b", "jaccard", 9) not in rows  # k beyond the rankings
    # ranks a: 4 3 2 1 ; b: 2 4 1 3 -> d = 2 -1 1 -2, sum d^2 = 10; rho = 1 - 6*10 / (4*15) = 0
    assert rows[("a", "b", "spearman", "")] == pytest.approx(0.0)
    assert rows[("a", "a", "spearman", "")] == pytest.approx(1.0)
    assert rows[("b", "b", "jaccard", 2)] == 1.0


# ---------------------------------------------------------------- the command on a tiny random model

N = 10  # the bootstrap's minimum: the smallest run the command accepts


@pytest.fixture(scope="module")
def passkey10(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ocr_heads.data import haystack
    from ocr_heads.data.samples import generate_samples

    out = tmp_path_factory.mktemp("passkey10")
    generate_samples(out, "passkey", 5, [128, 300], 1, haystack.embedded_corpus(),
                     lambda rng: haystack.passkey_needle(rng), source="embedded")
    return out


def write_score_file(folder: Path, model_dir: Path, kind: str, tag: str, means: list[float], layers: int = 3,
                     heads: int = 4, **meta: object) -> Path:
    """A score file as step2 writes it (authors' layout + sidecar), with chosen means: the ranking under test."""
    from ocr_heads.core.provenance import model_fingerprint
    from ocr_heads.scores.files import save_scores

    per_head = {f"l{layer}_h{head}": [means[layer * heads + head], 0.0] for layer in range(layers)
                for head in range(heads)}
    path = folder / "image" / f"tiny_{tag}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"kind": kind, "model": "tiny", "model_fingerprint": model_fingerprint(str(model_dir)),
              "num_layers": layers, "num_heads": heads, "protocol": {"protocol": "paper"}, "data_fingerprint": "d1",
              **meta}
    save_scores(path, per_head, record)
    return path


@pytest.fixture(scope="module")
def score_files(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("scores")
    # The tiny model: 3 layers x 4 heads. OCR ranks them layer-major, prefill in reverse.
    return {"ocr": write_score_file(folder, tiny_model_dir, "ocr", "fg", list(range(12, 0, -1))),
            "prefill": write_score_file(folder, tiny_model_dir, "prefill", "prefill", list(range(1, 13)))}


def run_validate(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    from ocr_heads.pipeline.validate import main

    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def common_args(model: Path, scores: list[Path], data: Path, out: Path) -> list[str]:
    return ["--model_id", str(model), "--protocol", "paper", "--scores", *map(str, scores), "--datasets", "passkey",
            "--data", f"passkey={data}", "--n", str(N), "--seeds", "2", "--max_new_tokens", "3", "--batch_size", "5",
            "--resamples", "200", "--out", str(out)]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_command_writes_every_output_and_resumes(tiny_model_dir: Path, score_files: dict, passkey10: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "val"
    argv = common_args(tiny_model_dir, list(score_files.values()), passkey10, out) + ["--ks", "1", "2", "20"]
    status, printed, err = run_validate(argv, capsys)
    assert status == 0, err
    assert "ocr: k grid capped at 12 heads" in caplog.text and "k=20 dropped" in caplog.text  # the cap is stated

    summary = read_csv(out / "validate_summary.csv")
    assert list(summary[0]) == ["score", "k", "top_drop", "random_drop", "gap", "gap_ci_low", "gap_ci_high", "n"]
    assert [(r["score"], r["k"]) for r in summary] == [("ocr", "1"), ("ocr", "2"), ("prefill", "1"), ("prefill", "2")]

    runs = read_csv(out / "validate.csv")
    # per score: baseline + per k (top + 2 random + 2 disjoint)
    assert len(runs) == 2 * (1 + 2 * 5)
    assert {r["model_fingerprint"] for r in runs} == {json.loads((out / "validate.settings.json").read_text())[
        "model_fingerprint"]}
    assert {r["protocol"] for r in runs} == {"paper"} and {r["n"] for r in runs} == {str(N)}
    top = {(r["score"], r["k"]): r["heads"] for r in runs if r["head_set"] == "top"}
    assert top[("ocr", "2")] == "l0_h0 l0_h1" and top[("prefill", "2")] == "l2_h3 l2_h2"
    for r in runs:
        if r["head_set"] == "random_disjoint":
            assert not set(r["heads"].split()) & set(top[(r["score"], r["k"])].split())

    # The summary equals the arithmetic redone here from the runs' own per-sample logs.
    def ems(score: str, stem: str) -> list[float]:
        folder = out / "runs" / score / "masking" / tiny_model_dir.name
        lines = (folder / f"{stem}.samples.jsonl").read_text().splitlines()
        return [json.loads(line)["scores"]["em"] for line in lines]

    base = ems("common", "passkey")
    top_em = ems("ocr", "passkey_image_top_k2")
    randoms = [ems("common", f"passkey_image_random_k2_seed{seed}") for seed in (0, 1)]
    row = next(r for r in summary if (r["score"], r["k"]) == ("ocr", "2"))
    assert float(row["top_drop"]) == pytest.approx(np.mean(base) - np.mean(top_em), abs=1e-6)
    assert float(row["random_drop"]) == pytest.approx(np.mean(base) - np.mean(randoms), abs=1e-6)
    assert float(row["gap"]) == pytest.approx(float(row["top_drop"]) - float(row["random_drop"]), abs=1e-6)
    assert float(row["gap_ci_low"]) <= float(row["gap"]) <= float(row["gap_ci_high"])

    scores = read_csv(out / "validate_scores.csv")
    assert {r["score"] for r in scores} == {"ocr", "prefill"}
    assert all("not held out" in r["k_chosen_on"] and r["ks"] == "1 2" for r in scores)
    similarity = read_csv(out / "validate_similarity.csv")
    assert {r["measure"] for r in similarity} == {"jaccard", "spearman"}
    ocr_vs_prefill = next(r for r in similarity if (r["score_a"], r["score_b"], r["measure"]) ==
                          ("ocr", "prefill", "spearman"))
    assert float(ocr_vs_prefill["value"]) == pytest.approx(-1.0)  # reversed rankings
    for name in ("validate_drop.png", "validate_similarity.png", "report/index.html"):
        assert (out / name).stat().st_size > 0, name
    assert "causal gap" in (out / "report" / "index.html").read_text()
    assert "ocr" in printed and "verdict" in printed

    # Resume: the same command regenerates no sample (every per-sample log keeps its bytes and time).
    logs = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.rglob("*.samples.jsonl")}
    status, _, err = run_validate(argv, capsys)
    assert status == 0, err
    assert logs == {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in out.rglob("*.samples.jsonl")}
    assert read_csv(out / "validate_summary.csv") == summary

    # Other settings into the same --out: refused, one error line, nothing run.
    status, _, err = run_validate(common_args(tiny_model_dir, [score_files["ocr"]], passkey10, out), capsys)
    assert status == 2
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        next(line for line in err.splitlines() if line.startswith("error:"))]
    assert "other settings" in err and "scores" in err

    # The report command picks the section up from the folder.
    from ocr_heads.report.__main__ import main as report_main

    assert report_main(["--validate", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "causal gap" in (tmp_path / "report" / "index.html").read_text()


def test_calibration_chooses_k_and_transfer_to_docvqa(tiny_model_dir: Path, score_files: dict, passkey10: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Heads scored on passkey pages, k chosen on a passkey calibration split, measured on passkey and on DocVQA
    (ANLS) in one run: one summary per dataset."""
    docvqa = docvqa_folder(tmp_path / "docvqa", N)
    out = tmp_path / "val"
    argv = common_args(tiny_model_dir, [score_files["ocr"]], passkey10, out) + [
        "--datasets", "passkey", "doc", "--data", f"passkey={passkey10}", f"doc={docvqa}",
        "--calibration", f"passkey={passkey10}", "--ks", "1", "3"]  # the later flags replace common_args' ones
    status, printed, err = run_validate(argv, capsys)
    assert status == 0, err
    for dataset in ("passkey", "doc"):
        summary = read_csv(out / f"validate_summary_{dataset}.csv")
        assert [r["k"] for r in summary] == ["1", "3"] and {r["n"] for r in summary} == {str(N)}
        (chosen,) = read_csv(out / f"validate_scores_{dataset}.csv")
        assert chosen["k_chosen_on"].startswith("calibration (passkey")
        assert (out / f"validate_drop_{dataset}.png").is_file()
    runs = read_csv(out / "validate.csv")
    assert {(r["split"], r["dataset"], r["metric"]) for r in runs} == {
        ("calibration", "passkey", "em"), ("heldout", "passkey", "em"), ("heldout", "doc", "anls")}
    # The calibration split's choice is the k of its largest gap (ties: the smaller k).
    calib = {r["k"]: float(r["drop"]) for r in runs if r["split"] == "calibration" and r["head_set"] == "top"}
    rand = {}
    for r in runs:
        if r["split"] == "calibration" and r["head_set"] == "random":
            rand.setdefault(r["k"], []).append(float(r["drop"]))
    gaps = {k: calib[k] - np.mean(rand[k]) for k in calib}
    best = max(sorted(gaps, key=int), key=lambda k: gaps[k])
    assert {read_csv(out / f"validate_scores_{d}.csv")[0]["chosen_k"] for d in ("passkey", "doc")} == {best}
    assert "doc: causal gap" in printed


def docvqa_folder(root: Path, count: int) -> Path:
    """DocVQA in its hub snapshot layout (as tests/test_tasks.py writes it), ``count`` validation rows."""
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature
    from test_tasks import docvqa_rows, write_parquet

    features = Features({"questionId": Value("string"), "question": Value("string"),
                         "answers": Sequence(Value("string")), "docId": Value("int64"), "image": ImageFeature()})
    write_parquet(root / "DocVQA" / "validation-00000-of-00001.parquet",
                  docvqa_rows([str(i) for i in range(1, count + 1)]), features)
    return root


# ---------------------------------------------------------------- bad input: one error line, exit 2


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", ["models", "protocols", "data", "kind", "plain", "lacks", "list_lacks", "too_few",
                                  "short_data", "twice"])
def test_bad_input(case: str, tiny_model_dir: Path, score_files: dict, passkey10: Path, passkey_dir: Path,
                   tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = score_files["ocr"]
    means = list(range(12))
    files, data, extra = [good], passkey10, []
    expected = {"models": "different models", "protocols": "different protocols", "data": "different data",
                "kind": "kind must be one of", "plain": "plain list", "lacks": "does not exist in a model",
                "list_lacks": "head l3_h1 does not exist in a model with 3 layers",
                "too_few": "bootstrap needs at least", "short_data": "6 usable samples", "twice": "more than once"}
    if case == "models":
        files.append(write_score_file(tmp_path, tiny_model_dir, "prefill", "prefill", means, model_fingerprint="x"))
    elif case == "protocols":
        files.append(write_score_file(tmp_path, tiny_model_dir, "prefill", "prefill", means,
                                      protocol={"protocol": "native"}))
    elif case == "data":
        files.append(write_score_file(tmp_path, tiny_model_dir, "prefill", "prefill", means, data_fingerprint="d2"))
    elif case == "kind":
        files = [write_score_file(tmp_path, tiny_model_dir, "ocr", "fg", means)]
        sidecar = files[0].with_name("tiny_fg.meta.json")
        sidecar.write_text(sidecar.read_text().replace('"kind": "ocr"', '"kind": "bogus"'))
    elif case == "plain":
        files = [tmp_path / "plain.json"]
        files[0].write_text('["l0_h0", "l1_h1"]')
    elif case == "lacks":  # a 4-layer score file for the 3-layer tiny model
        files = [write_score_file(tmp_path, tiny_model_dir, "ocr", "fg", list(range(16)), layers=4)]
    elif case == "list_lacks":  # a step3 head list naming a layer the model does not have
        files = [tmp_path / "ocr_heads.json"]
        files[0].write_text(json.dumps({"heads": [{"head": "l0_h1", "score": 0.5}, {"head": "l3_h1", "score": 0.4}],
                                        "kind": "ocr", "model": "tiny", "num_layers": 4, "num_heads": 4}))
    elif case == "too_few":
        extra = ["--n", "5"]
    elif case == "short_data":
        data = passkey_dir  # six samples
    elif case == "twice":
        files.append(write_score_file(tmp_path, tiny_model_dir, "ocr", "fg", means))
    status, _, err = run_validate(common_args(tiny_model_dir, files, data, tmp_path / "out") + extra, capsys)
    assert status == 2
    (line,) = error_lines(err)
    assert expected[case] in line, line
    assert not list((tmp_path / "out").rglob("*.samples.jsonl"))  # refused before any run
