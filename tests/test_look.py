"""`python -m ocr_heads.look` and the ImageAttention probe behind it: the maps equal eager attention on every family's
tiny model (fp32, every step, layer, head and image token), batched equals alone, the command writes its contract
files and refuses bad input with one `error:` line, and on the toy model the layer-1 OCR heads look at the digit they
produce."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from family_battery import with_generated
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from ocr_heads import look
from ocr_heads.attention import capture, text_attention
from ocr_heads.attention.probes import ImageAttention
from ocr_heads.data.samples import load_samples
from ocr_heads.maps.overlay import paint, panels
from ocr_heads.maps.run import ImageTokenOrder
from ocr_heads.models import load_adapter
from ocr_heads.models.base import collate, left_padding
from ocr_heads.models.tiny.build import page_families

FAMILIES = page_families()  # the text-only LMs read no pages (tests/test_family_text_lm.py)
STEPS = 3


def page(size=(300, 200), text="The pass key is 48213.") -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((20, 20), text, fill="black")
    return image


def eager_rows(adapter, inputs, generated: list[int]) -> dict[int, torch.Tensor]:
    """Layer -> eager (steps, heads, keys) probabilities of the producing rows, from one no-cache forward with
    ``output_attentions`` (``with_generated`` pads every per-token input, Gemma 3's token types included)."""
    with text_attention(adapter, "eager"), torch.no_grad():
        attentions = adapter.model(**with_generated(inputs, generated), output_attentions=True,
                                   use_cache=False).attentions
    layers = adapter.scoreable_layers
    assert len(attentions) == len(layers)
    return {layer: rows[0, :, inputs.prompt_length - 1 :].transpose(0, 1).float()
            for layer, rows in zip(layers, attentions, strict=True)}


def probe_for(inputs) -> ImageAttention:
    order = ImageTokenOrder.of(inputs)
    return ImageAttention(order.positions, {"sink": [0], "image": order.positions, "last": [inputs.prompt_length - 1]},
                          dtype=torch.float32)


def check_maps_equal_eager(adapter, inputs) -> None:
    probe = probe_for(inputs)
    with capture(adapter) as recorder:
        recorder.reset(inputs.prompt_length, [probe])
        generated = adapter.generate(inputs, max_new_tokens=STEPS)
        result = recorder.probe_result(ImageAttention)
    shape = adapter.shape
    assert result.attention.shape == (len(generated), shape.num_layers, shape.num_heads, len(probe.positions))
    reference = eager_rows(adapter, inputs, generated)
    image = list(probe.positions)
    for layer in range(shape.num_layers):
        if layer not in reference:  # a hybrid model's linear-attention layer: no attention rows
            assert torch.isnan(result.attention[:, layer]).all()
            continue
        rows = reference[layer]
        torch.testing.assert_close(result.attention[:, layer], rows[:, :, image], atol=1e-5, rtol=0)
        torch.testing.assert_close(result.group_mass["image"][:, layer], rows[:, :, image].sum(-1), atol=1e-5, rtol=0)
        torch.testing.assert_close(result.group_mass["sink"][:, layer], rows[:, :, 0], atol=1e-5, rtol=0)
        last = inputs.prompt_length - 1
        torch.testing.assert_close(result.group_mass["last"][:, layer], rows[:, :, last], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_maps_equal_eager_attention_on_every_family(family_dir, family):
    adapter = load_adapter(str(family_dir(family)))
    assert adapter.model.dtype == torch.float32
    check_maps_equal_eager(adapter, adapter.image_inputs([page()], "What is the pass key?"))
    assert adapter.model.config.get_text_config()._attn_implementation == "sdpa"


def test_maps_equal_eager_under_a_binding_sliding_window(tmp_path):
    """Gemma 3 with a 24-key window (far shorter than the prompt): the cache drops keys, the probe maps positions
    through the key offset and gives a dropped image token probability 0, as eager does; nothing is refused."""
    from ocr_heads.models.tiny.gemma3 import build_tiny_gemma3

    adapter = load_adapter(str(build_tiny_gemma3(tmp_path / "tiny-gemma3-window", sliding_window=24)))
    assert adapter.model.config.text_config.layer_types[0] == "sliding_attention"
    check_maps_equal_eager(adapter, adapter.image_inputs([page()], "What is the pass key?"))


def test_batched_equals_alone_and_subsets(tiny_adapter):
    """Two prompts of different lengths (left padding) in one generate give each the maps it gets alone; a head and
    layer subset keeps exactly those slices; float16 storage rounds float32."""
    inputs = [tiny_adapter.image_inputs([page((300, 200))], "What is the pass key?"),
              tiny_adapter.image_inputs([page((200, 400)), page((120, 90))], "Which key?")]
    assert len({i.prompt_length for i in inputs}) == 2
    probes = [probe_for(i) for i in inputs]
    alone, generated = [], []
    with capture(tiny_adapter) as recorder:
        for one, probe in zip(inputs, probes, strict=True):
            recorder.reset(one.prompt_length, [probe])
            generated.append(tiny_adapter.generate(one, max_new_tokens=STEPS))
            alone.append(recorder.probe_result(ImageAttention))
        recorder.reset(max(i.prompt_length for i in inputs), [[p] for p in probes], left_padding(inputs))
        together = tiny_adapter.generate_batch(inputs, max_new_tokens=STEPS)
        batched = [recorder.probe_results(i, steps=len(g))[ImageAttention] for i, g in enumerate(together)]
        sub = ImageAttention(probes[0].positions, layers=(1, 2), heads=(3, 0))
        recorder.reset(inputs[0].prompt_length, [sub])
        tiny_adapter.generate(inputs[0], max_new_tokens=STEPS)
        subset = recorder.probe_result(ImageAttention)
    assert together == generated
    for one, both in zip(alone, batched, strict=True):
        torch.testing.assert_close(both.attention, one.attention, atol=1e-6, rtol=0)
        for name, mass in one.group_mass.items():
            torch.testing.assert_close(both.group_mass[name], mass, atol=1e-6, rtol=0)
    assert subset.attention.dtype == torch.float16 and (subset.layers, subset.heads) == ((1, 2), (3, 0))
    expected = alone[0].attention[:, [1, 2]][:, :, [3, 0]]
    torch.testing.assert_close(subset.attention.float(), expected, atol=1e-3, rtol=1e-3)
    assert collate(inputs, tiny_adapter.pad_token_id)["input_ids"].shape[1] == max(i.prompt_length for i in inputs)


def test_panels_split_a_thumbnail_from_the_tiles():
    """Two 50 px tiles side by side, then a thumbnail over the whole page (2 tokens): two panels; a NaN box is in
    none; painting puts each value on exactly its box's pixels."""
    tiles = np.array([[0, 0, 50, 50], [50, 0, 100, 50], [np.nan] * 4, [0, 0, 50, 50], [50, 0, 100, 50]], float)
    covers = panels(tiles, [0] * 5)
    assert [c.tokens for c in covers] == [[0, 1], [3, 4]]
    heat = paint((100, 50), tiles, np.array([0.25, 0.75, 1.0, 0.0, 0.0]), [0, 1])
    assert (heat[:, :50] == 0.25).all() and (heat[:, 50:] == 0.75).all()
    heat = paint((101, 50), np.array([[10.4, 0.0, 20.6, 5.0]]), np.array([1.0]), [0])
    assert np.flatnonzero(~np.isnan(heat[0])).tolist() == list(range(10, 21))  # pixel centres 10.5 .. 20.5


def run_look(capsys, argv: list[str]) -> tuple[int, str, str]:
    status = look.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_the_command_writes_the_contract_files(tiny_model_dir, tmp_path, capsys):
    image = tmp_path / "page.png"
    page((300, 200)).save(image)
    out = tmp_path / "look"
    status, stdout, _ = run_look(capsys, ["--model_id", str(tiny_model_dir), "--image", str(image), str(image),
                                          "--question", "What is the pass key?", "--out", str(out),
                                          "--max_new_tokens", "3", "--heads", "l1_h2,l2_h0", "--layers", "0-1",
                                          "--tokens", "0,2", "--json"])
    assert status == 0
    meta = json.loads((out / "look.json").read_text())
    maps = load_file(str(out / "attention.safetensors"))
    steps, tokens = len(meta["pieces"]), len(meta["tiles"])
    assert maps["image_attention"].shape == (steps, 3, 4, tokens) and maps["image_attention"].dtype == torch.float16
    assert (meta["layers"], meta["heads"], meta["dtype"]) == (3, 4, "float16")
    assert meta["pages"] == [0] * (tokens // 2) + [1] * (tokens // 2)
    assert all(len(box) == 4 for box in meta["tiles"]) and meta["page_files"] == ["page_0.png", "page_1.png"]
    assert all((out / name).is_file() for name in meta["page_files"]) and meta["page_sizes"] == [[300, 200]] * 2
    assert (meta["model"], meta["protocol"]) == (tiny_model_dir.name, "paper")
    assert meta["question"] == "What is the pass key?"
    assert meta["model_note"].startswith("random weights") and meta["model_fingerprint"]
    for name, key in meta["group_mass"].items():
        assert maps[key].shape == (steps, 3, 4), name
    assert set(meta["groups"]) >= {"image_0", "image_1", "question", "sink", "text"}
    # the groups partition the prompt: their masses sum to 1 at the prefill row; later rows also see the answer
    total = sum(maps[f"group_mass.{name}"].float() for name in ("image_0", "image_1", "question", "sink", "text"))
    torch.testing.assert_close(total[0], torch.ones_like(total[0]), atol=2e-3, rtol=0)
    assert (total <= 1 + 2e-3).all()
    overlays = sorted(out.glob("overlay_*.png"))
    assert [p.name for p in overlays] == sorted(o["file"] for o in meta["overlays"])
    assert sorted((o["step"], o["heads"]) for o in meta["overlays"]) == [  # the --heads set and the --layers mean
        (step, label) for step in (0, 2) for label in ("mean of 2 heads", "mean of layers 0-1")]
    last = json.loads(stdout.strip().splitlines()[-1])
    assert last["out"] == str(out) and "look.json" in last["files"] and "attention.safetensors" in last["files"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".look.")]  # no staging folder left


def test_a_step1_sample_gets_its_answer_heads(tiny_model_dir, passkey_dir, tmp_path, capsys):
    sample = load_samples(passkey_dir)[0]
    out = tmp_path / "look"
    argv = ["--model_id", str(tiny_model_dir), "--data", str(passkey_dir), "--sample", sample.id, "--out", str(out),
            "--max_new_tokens", "2", "--json"]
    assert run_look(capsys, argv)[0] == 0
    meta = json.loads((out / "look.json").read_text())
    assert meta["question"] == sample.question and meta["sample"]["id"] == sample.id and "evidence" in meta["groups"]
    assert run_look(capsys, argv)[0] == 0  # a previous look folder is replaced
    assert json.loads((out / "look.json").read_text())["pieces"] == meta["pieces"]


@pytest.mark.parametrize("case", ["not_an_image", "rejected_by_processor", "too_long", "no_such_head", "unwritable"])
def test_bad_input_is_one_error_line(tiny_model_dir, tmp_path, capsys, case):
    good = tmp_path / "page.png"
    page().save(good)
    out = tmp_path / "out"
    image, question, extra = good, "What is the pass key?", []
    if case == "not_an_image":
        image = tmp_path / "notes.png"
        image.write_text("not a picture")
    elif case == "rejected_by_processor":
        image = tmp_path / "thin.png"
        Image.new("RGB", (2000, 5), "white").save(image)  # aspect ratio 400: Qwen2-VL's smart_resize refuses it
    elif case == "too_long":
        question = "x" * 70_000  # the tiny model's context is 65536 tokens (one token a character)
    elif case == "no_such_head":
        extra = ["--heads", "l1_h2,l9_h0"]
    else:
        blocker = tmp_path / "a_file"
        blocker.write_text("")
        out = blocker / "out"
    status, _, err = run_look(capsys, ["--model_id", str(tiny_model_dir), "--image", str(image), "--question",
                                       question, "--out", str(out), "--max_new_tokens", "2", *extra])
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert status == 2 and len(errors) == 1, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_toy_layer1_ocr_heads_look_at_the_digit_they_produce(tmp_path, capsys):
    """The "done when" of issue 22, measured from the files `look` writes: on the toy model and passkey pages, the
    mass of the layer-1 OCR heads (l1_h2-l1_h7, the layer-1 heads of the demo's OCR list) on the digit's own tile at
    the step producing answer digits 1-2. Measured: 0.889 on these 8 held-out samples (seed 12345; min 0.693 over the
    16 events), 0.910 on 20 (0.955 for the top-3 l1_h4-l1_h6). The issue asks >= 0.5; asserted >= 0.8."""
    from ocr_heads.toy.data import write_samples

    data = tmp_path / "data"
    write_samples(data, 8, 12345)
    layer, heads = 1, [2, 3, 4, 5, 6, 7]
    masses = []
    for sample in load_samples(data):
        out = tmp_path / sample.id
        argv = ["--model_id", "models/toy-qwen2-vl", "--data", str(data), "--sample", sample.id, "--out", str(out),
                "--max_new_tokens", "7", "--heads", ",".join(f"l{layer}_h{h}" for h in heads)]
        assert run_look(capsys, argv)[0] == 0
        meta = json.loads((out / "look.json").read_text())
        maps = load_file(str(out / "attention.safetensors"))["image_attention"].float()
        assert meta["protocol"] == "native" and meta["answer"].strip() == sample.answer
        for char in meta["answer_heads"][:2]:
            masses.append(float(maps[char["step"], layer, heads][:, char["tiles"]].sum(-1).mean()))
    assert len(masses) == 16
    print(f"toy: mean mass of l1_h2-l1_h7 on the digit's tile, digits 1-2: {np.mean(masses):.3f} "
          f"(min {np.min(masses):.3f}, {len(masses)} events)")
    assert np.mean(masses) >= 0.8
