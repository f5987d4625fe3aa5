"""step1: pages, per-character boxes (checked against rendered ink) and the record format."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ocr_heads.data.haystack import Needle, niah_needle
from ocr_heads.data.render import PageLayout, PageStyle, layout_text
from ocr_heads.data.samples import build_sample, evidence_boxes, load_samples

ROOT = Path(__file__).resolve().parents[1]


def ink(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")) < 200


def char_alone(layout: PageLayout, offset: int) -> np.ndarray:
    """Ink of one character drawn alone where the full line would draw it."""
    page, row, col = layout.locate(offset)
    style = layout.style
    start = layout.lines[page * style.lines_per_page + row][0]
    line = layout.text[start : start + col + 1]
    # Draw the prefix invisibly-by-difference: full prefix+char minus prefix.
    full = Image.new("L", style.page_size, 255)
    ImageDraw.Draw(full).text((style.margin, style.margin + row * style.line_height), line,
                              font=style.font, fill=0)
    prefix = Image.new("L", style.page_size, 255)
    ImageDraw.Draw(prefix).text((style.margin, style.margin + row * style.line_height), line[:-1],
                                font=style.font, fill=0)
    return ink(full) & ~ink(prefix)


def box_mask(shape, box):
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = True
    return mask


def assert_box_exact(layout: PageLayout, offset: int, page_image: Image.Image, box) -> None:
    char_ink = char_alone(layout, offset)
    inside = box_mask(char_ink.shape, box)
    if layout.text[offset] != " ":
        assert char_ink.any(), f"no ink for {layout.text[offset]!r}"
    assert not (char_ink & ~inside).any(), f"ink of {layout.text[offset]!r} leaks outside its box {box}"
    # Neighbours' ink stays out of the box.
    for neighbour in (offset - 1, offset + 1):
        if 0 <= neighbour < len(layout.text) and layout.char_box(neighbour).page == layout.char_box(offset).page:
            assert not (char_alone(layout, neighbour) & inside).any(), "a neighbour's ink is inside the box"
    # The saved page shows exactly this character's ink inside the box.
    page_ink = ink(page_image)
    assert np.array_equal(page_ink & inside, char_ink & inside)


def test_layout_covers_text_and_wraps_at_word_boundaries():
    text = "aaaa bbbb cccc dddddddddddd ee"
    lines = layout_text(text, chars_per_line=10)
    assert "".join(text[s:e] for s, e in lines) == text
    assert [text[s:e] for s, e in lines] == ["aaaa bbbb ", "cccc ", "dddddddddd", "dd ee"]
    assert all(e - s <= 10 for s, e in lines)


def test_every_answer_box_holds_its_ink_and_no_neighbours(tmp_path):
    needle = Needle("The pass key is 48213. Remember it. 48213 is the pass key.", "What is the pass key?", "48213")
    record = build_sample("s", "lorem ipsum dolor sit amet. " * 40, needle, 0.5, tmp_path)
    layout = PageLayout(record["context"])
    for occurrence in record["occurrences"]:
        start, end = occurrence["span"]
        assert record["context"][start:end] == "48213"
        flat = [(int(p), b) for p, boxes in occurrence["evidence"].items() for b in boxes]
        assert len(flat) == len("48213")
        for offset, (page, box) in zip(range(start, end), flat, strict=True):
            image = Image.open(tmp_path / record["pages"][page])
            assert image.size == PageStyle().page_size
            assert_box_exact(layout, offset, image, box)


@pytest.mark.parametrize("split_at", ["line", "page"])
def test_answer_wrapped_across_lines_and_pages_keeps_exact_boxes(split_at):
    style = PageStyle(chars_per_line=20, lines_per_page=3)
    answer = "blue saffron tea"
    # Put the answer so it starts near the end of a line (line 2 for 'line', the page's last line for 'page').
    lead_lines = 1 if split_at == "line" else 2
    lead = ("x" * 19 + " ") * lead_lines + "y" * 13 + " "
    context = lead + answer + " " + "tail words here. " * 6
    layout = PageLayout(context, style)
    start = context.index(answer)
    pages = {layout.char_box(i).page for i in range(start, start + len(answer))}
    rows = {layout.locate(i)[:2] for i in range(start, start + len(answer))}
    assert len(rows) == 2, "the answer must wrap"
    if split_at == "page":
        assert pages == {0, 1}
    evidence = evidence_boxes(layout, (start, start + len(answer)))
    assert set(evidence) == pages and sum(map(len, evidence.values())) == len(answer)
    images = layout.render()
    for offset in range(start, start + len(answer)):
        box = layout.char_box(offset)
        assert_box_exact(layout, offset, images[box.page], box.box)


def test_step1_cli_writes_records_in_the_design_format(tmp_path):
    out = tmp_path / "pk"
    cmd = [sys.executable, str(ROOT / "step1_passkey.py"), "--n", "8", "--seed", "7", "--lengths", "256",
           "--out", str(out)]
    subprocess.run(cmd, check=True, capture_output=True)
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 8
    for record in records:
        assert set(record) >= {"id", "question", "answer", "context", "pages", "evidence"}
        assert record["answer"].isdigit() and len(record["answer"]) == 5
        assert sum(len(b) for b in record["evidence"].values()) == len(record["answer"])
        assert all(isinstance(k, str) for k in record["evidence"])
        for page in record["pages"]:
            assert (out / page).is_file() and not Path(page).is_absolute()
        # Every box on the saved pages is exact (ink of its character only).
        layout = PageLayout(record["context"])
        start = record["occurrences"][0]["span"][0]
        flat = [(int(p), b) for p, boxes in record["evidence"].items() for b in boxes]
        for offset, (page, box) in zip(range(start, start + 5), flat, strict=True):
            assert_box_exact(layout, offset, Image.open(out / record["pages"][page]), box)
    # Deterministic: the same command elsewhere gives the same records.
    out2 = tmp_path / "pk2"
    subprocess.run(cmd[:-1] + [str(out2)], check=True, capture_output=True)
    assert (out2 / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()
    # A rerun resumes: nothing duplicated.
    subprocess.run(cmd, check=True, capture_output=True)
    assert len((out / "samples.jsonl").read_text().splitlines()) == 8
    help_text = subprocess.run([sys.executable, str(ROOT / "step1_niah.py"), "--help"], capture_output=True,
                               text=True, check=True).stdout
    assert "samples.jsonl" in help_text and "evidence" in help_text


def test_niah_samples_load_and_validate(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "step1_niah.py"), "--n", "3", "--lengths", "300", "--out",
                    str(tmp_path)], check=True, capture_output=True)
    samples = load_samples(tmp_path)
    assert len(samples) == 3
    for sample in samples:
        assert sample.answer in sample.context
        assert sample.question.endswith("?")
        assert len(sample.load_pages()) == len(sample.page_paths)


def _write_records(path: Path, records: list[dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no step1 output"):
        load_samples(tmp_path / "nowhere")
    good = {"id": "a", "question": "q", "answer": "123", "context": "key 123", "pages": ["a/p.png"],
            "evidence": {"0": [[0, 0, 5, 5]] * 3}}
    _write_records(tmp_path / "missing_field", [{k: v for k, v in good.items() if k != "pages"}])
    with pytest.raises(ValueError, match="missing field"):
        load_samples(tmp_path / "missing_field")
    _write_records(tmp_path / "absent", [dict(good, answer="999")])
    with pytest.raises(ValueError, match="does not occur in the context"):
        load_samples(tmp_path / "absent")
    _write_records(tmp_path / "zero", [dict(good, evidence={"0": [[3, 3, 3, 9]]})])
    with pytest.raises(ValueError, match="zero-size"):
        load_samples(tmp_path / "zero")
    _write_records(tmp_path / "nopage", [good])
    (sample,) = load_samples(tmp_path / "nopage")
    with pytest.raises(FileNotFoundError, match="page image missing"):
        sample.load_pages()
    (tmp_path / "nopage" / "a").mkdir()
    (tmp_path / "nopage" / "a" / "p.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read page image"):
        sample.load_pages()
    with pytest.raises(ValueError, match="empty haystack"):
        build_sample("e", "   ", Needle("key 1", "q", "1"), 0.5, tmp_path)
    with pytest.raises(ValueError, match="not in the needle"):
        build_sample("e", "hay", Needle("key 1", "q", "2"), 0.5, tmp_path)


def test_hf_passkey_rows_render_with_their_own_needle(tmp_path, monkeypatch):
    """The --source hf path on rows shaped like nanotron/simple_needle_in_a_hay_stack (no network)."""
    import datasets

    from ocr_heads.pipeline.step1 import build_parser, run

    prompt = ("Grass is green. The sky is blue. The pass key is 71234. Remember it. 71234 is the pass key. "
              "The sun is warm. " * 1)
    rows = datasets.Dataset.from_dict({"prompt": [prompt, prompt.replace("71234", "50999")],
                                       "answer": [71234, 50999], "context_length": [1024, 1024]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    args = build_parser("passkey", "x").parse_args(["--source", "hf", "--n", "2", "--lengths", "1024",
                                                     "--out", str(tmp_path)])
    run("passkey", args)
    samples = load_samples(tmp_path)
    assert sorted(s.answer for s in samples) == ["50999", "71234"]
    for sample in samples:
        assert sample.context.count(sample.answer) == 1  # "{answer} is the pass key." removed
        start, end = sample.needle_span
        assert sample.context[start:end] == f"The pass key is {sample.answer}."
        assert sum(len(b) for b in sample.evidence.values()) == 5


def test_single_char_records_box_only_the_needles_answer_slots(tmp_path):
    """--single-char: every char of 0-9a-z gets exactly the template's answer slots, boxed at their glyphs.

    The template's own letters ("Th*e*", "k*e*y", "Rem*e*mb*e*r", "pa*ss*") must never be targets.
    """
    import string

    from ocr_heads.data.haystack import PASSKEY_TEMPLATE
    from ocr_heads.pipeline.step1 import build_parser, run

    args = build_parser("passkey", "x").parse_args(["--single-char", "--n", "1", "--lengths", "40",
                                                     "--out", str(tmp_path)])
    run("passkey", args)
    records = {r["answer"]: r for r in map(json.loads, (tmp_path / "samples.jsonl").read_text().splitlines())}
    assert sorted(records) == sorted(string.digits + string.ascii_lowercase)
    slots_in_template = PASSKEY_TEMPLATE.count("{answer}")
    assert slots_in_template == 2
    for char, record in records.items():
        needle_start = record["needle_span"][0]
        # Offsets of the slots in the filled template, computed independently of the builder.
        before_first = PASSKEY_TEMPLATE.index("{answer}")
        before_second = PASSKEY_TEMPLATE.index("{answer}", before_first + 1) - len("{answer}") + 1
        expected = [[needle_start + before_first, needle_start + before_first + 1],
                    [needle_start + before_second, needle_start + before_second + 1]]
        assert [occ["span"] for occ in record["occurrences"]] == expected, char
        assert record["evidence"] == record["occurrences"][0]["evidence"]
        layout = PageLayout(record["context"])
        for occ in record["occurrences"]:
            (page, boxes), = occ["evidence"].items()
            assert len(boxes) == 1 and record["context"][occ["span"][0]] == char
            image = Image.open(tmp_path / record["pages"][int(page)])
            assert_box_exact(layout, occ["span"][0], image, boxes[0])


def test_ready_made_needles_find_whole_token_answer_slots():
    """Hub needles carry no offsets: the answer is found where it stands as a whole token."""
    needle = Needle("The 17th pass key is 7. Remember it, 7 is the pass key.", "q", "7")
    assert [needle.text[s - 3 : e + 1] for s, e in needle.answer_slots()] == ["is 7.", "t, 7 "]
    glued = Needle("code A7B", "q", "7")  # no whole-token occurrence: every substring occurrence
    assert glued.answer_slots() == [(6, 7)]
    niah = niah_needle(random.Random(3))
    (start, end), = niah.answer_slots()
    assert niah.text[start:end] == niah.answer and niah.text.endswith(f" is {niah.answer}.")
