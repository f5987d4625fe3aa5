"""Modality and Alignment read as their plain words in every output, so adopting them changes no file or message."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from ocr_heads.core.kinds import Alignment, Modality
from ocr_heads.core.provenance import differences
from ocr_heads.pipeline.step2 import Step2Config


def test_members_are_their_words_in_json_csv_paths_and_messages(tmp_path):
    assert json.dumps({"alignment": Alignment.AUTHORS, Modality.IMAGE: 1}) == '{"alignment": "authors", "image": 1}'
    row = io.StringIO()
    csv.writer(row).writerow([Modality.TEXT, Alignment.PRODUCE])
    assert row.getvalue() == "text,produce\r\n"
    assert (tmp_path / Modality.IMAGE).name == "image" and f"{Modality.IMAGE}_{Alignment.AUTHORS}" == "image_authors"
    assert differences({"alignment": "produce"}, {"alignment": Alignment.AUTHORS}) == [
        "alignment='produce' (now 'authors')"]
    assert {"image": "ocr"}[Modality.IMAGE] == "ocr" and Alignment("authors") is Alignment.AUTHORS


def test_the_step2_config_takes_the_command_lines_words_and_refuses_others():
    cfg = Step2Config("text", alignment="authors")
    assert (cfg.kind, cfg.alignment) == (Modality.TEXT, Alignment.AUTHORS)
    with pytest.raises(ValueError, match="'pages' is not a valid Modality"):
        Step2Config("pages")


def test_kinds_import_neither_torch_nor_the_rest_of_the_package():
    code = ("import sys, ocr_heads.core.kinds; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('ocr_heads.') and "
            "m not in ('ocr_heads.core', 'ocr_heads.core.kinds')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
