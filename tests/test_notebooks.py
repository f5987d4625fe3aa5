"""Both analysis notebooks run headless on fixture scores and write their figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from ocr_heads.scores.files import save_scores

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]


def _run(name: str) -> nbformat.NotebookNode:
    assert (ROOT / name).stat().st_size < 64_000  # committed with their text outputs only: small and diffable
    notebook = nbformat.read(ROOT / name, as_version=4)
    # The committed outputs come from the demo: the first cell must say which data (the toy model).
    assert notebook.cells[0].cell_type == "markdown" and "toy model" in notebook.cells[0].source
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return notebook


@pytest.fixture
def fixture_scores(tmp_path: Path) -> list[Path]:
    """Synthetic 3 x 4 score maps (deterministic, not model scores)."""
    rng = np.random.default_rng(0)
    paths = []
    for kind in ("ocr", "retrieval"):
        per_head = {
            f"l{layer}_h{head}": [float(v) for v in rng.choice([0.0, 0.5, 1.0], size=20, p=[0.7, 0.2, 0.1])]
            for layer in range(3)
            for head in range(4)
        }
        path = tmp_path / f"synthetic_{kind}.json"
        save_scores(path, per_head, {"kind": kind, "model": "synthetic", "num_layers": 3, "num_heads": 4})
        paths.append(path)
    return paths


def test_exp_analysis_notebook(fixture_scores: list[Path], tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "analysis"
    monkeypatch.setenv("OCR_HEADS_SCORES", os.pathsep.join(str(p) for p in fixture_scores))
    monkeypatch.setenv("OCR_HEADS_OUT", str(out))
    monkeypatch.setenv("OCR_HEADS_RESULTS", str(tmp_path / "no_results"))
    notebook = _run("exp_analysis.ipynb")
    for name in (
        "heatmap_synthetic_ocr.png",
        "heatmap_synthetic_retrieval.png",
        "sparsity.png",
        "distinct_synthetic_ocr__synthetic_retrieval.png",
        "activation_synthetic_ocr.png",
        "index.html",
    ):
        assert (out / name).is_file(), name
    text = "".join(o.get("text", "") for cell in notebook.cells for o in cell.get("outputs", []))
    assert "synthetic (ocr)" in text


def test_exp_case_fig_notebook(tmp_path: Path, monkeypatch) -> None:
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    rng = np.random.default_rng(1)
    case = tmp_path / "case.json"
    case.write_text(
        json.dumps(
            {
                "model": "synthetic",
                "chars": {
                    c: {f"l{layer}_h{head}": float(rng.random()) for layer in range(3) for head in range(4)}
                    for c in chars
                },
            }
        )
    )
    out = tmp_path / "case"
    monkeypatch.setenv("OCR_HEADS_CASE", str(case))
    monkeypatch.setenv("OCR_HEADS_OUT", str(out))
    _run("exp_case_fig.ipynb")
    assert (out / "case_heatmaps.png").is_file() and (out / "case_similarity.png").is_file()
