"""What a newcomer sees: the report names the head source of every masking row and where its data came from,
prints paths relative to --out, and every top-level script's --help stays light."""

from __future__ import annotations

import json
from pathlib import Path

from ocr_heads.report.__main__ import main as report_main

ROOT = Path(__file__).resolve().parent.parent
HEADER = "model,protocol,dataset,task,head_set,k,seed,metric,value,n,note\n"


def _scores(path: Path) -> Path:
    path.write_text(json.dumps({f"l{layer}_h{head}": [0.5, 0.0, 0.25 * head] for layer in range(2)
                                for head in range(4)}))
    return path


def test_report_names_head_sources_and_data_sources_with_relative_paths(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "masking.csv").write_text(
        HEADER + "toy,native,passkey,image,none,,1234,em,0.9,10,\n"
        "toy,native,passkey,image,top,4,1234,em,0.2,10,\n"
        "toy,native,passkey,text,top,4,1234,em,0.8,10,\n")
    case = tmp_path / "case" / "toy_case.json"
    case.parent.mkdir()
    case.write_text(json.dumps({"model": "toy", "chars": {"3": {f"l{layer}_h{head}": 0.1 * head for layer in range(2)
                                                                  for head in range(4)}}}))
    (case.parent / "toy_case.meta.json").write_text(json.dumps({"model": "toy", "source": "/x/toy_fg.samples.jsonl"}))
    out = tmp_path / "report"
    assert report_main(["--scores", str(_scores(tmp_path / "toy_fg.json")), "--out", str(out), "--results",
                        str(results), "--case", str(case)]) == 0
    printed = capsys.readouterr().out
    page = (out / "index.html").read_text()
    assert "OCR heads (image)" in page and "retrieval heads (text)" in page
    assert "OCR heads (image)" in printed
    assert "single-character passkeys" not in page
    assert "Case study: answer characters of step2 events (toy_fg.samples.jsonl) (toy)" in page
    assert str(tmp_path) not in page
    assert str(tmp_path) not in printed.replace(f"report: {out / 'index.html'}", "")
    assert "../results/masking.csv" in page and "../toy_fg.json" in page
