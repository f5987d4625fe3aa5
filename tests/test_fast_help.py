"""Every command builds its parser, family knobs included, without torch or transformers: ``--help`` is fast.

The knobs come from the torch-free family declarations (``ocr_heads/models/families/``); the model side of each
command is imported when it runs. Checked in fresh interpreters, where nothing was imported before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KNOB_FLAGS = ("--min_pixels", "--max_pixels", "--max_patches", "--pan_and_scan", "--no_image_splitting")
PARSERS = {
    "step2 image": "from ocr_heads.pipeline import step2; parser = step2.build_parser('image')",
    "step2 text": "from ocr_heads.pipeline import step2; parser = step2.build_parser('text')",
    "masking": "from ocr_heads.pipeline import experiment; parser = experiment.build_parser('masking')",
    "sink": "from ocr_heads.pipeline import experiment; parser = experiment.build_parser('sink')",
    "case": "from ocr_heads.pipeline import case_study; parser = case_study.build_parser()",
    "validate": "from ocr_heads.pipeline import validate; parser = validate.build_parser()",
    "inspect": "from ocr_heads import inspect; parser = inspect.build_parser()",
    "doctor": "from ocr_heads import doctor; parser = doctor.build_parser()",
}


def run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_building_every_parser_imports_neither_torch_nor_transformers():
    lines = ["import sys"]
    for name, build in PARSERS.items():
        lines += [build, "text = parser.format_help()",
                  f"assert all(flag in text for flag in {KNOB_FLAGS!r}), {name!r} + ': a family knob is missing'"]
    lines.append("heavy = sorted({'torch', 'transformers'} & set(sys.modules)); assert not heavy, heavy")
    done = run(["-c", "\n".join(lines)])
    assert done.returncode == 0, done.stderr[-2000:]


def test_step2_help_is_fast():
    start = time.perf_counter()
    done = run(["step2_ocr_retrieval_head.py", "--help"])
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--pan_and_scan" in done.stdout
    assert seconds < 2, f"step2_ocr_retrieval_head.py --help took {seconds:.1f} s"  # about 0.5 s; 7.5 s with torch
