"""Every command line of the authors' README (baekingeol/OCR_Head) runs through our parsers.

The command lines below are theirs verbatim (the bash loops of their Masking and Sink sections are
expanded as bash would); only the model id is swapped for a tiny local model. Each is parsed by the
parser our script of the same name uses, and its meaning is checked against what their code does
with it.
"""

from __future__ import annotations

import itertools
import logging
import shlex
from pathlib import Path
from string import Template

import pytest
import torch

from ocr_heads.attention.edits import mask_heads
from ocr_heads.data.samples import load_sample_dirs
from ocr_heads.experiments.registry import get_experiment
from ocr_heads.experiments.run import RunConfig, intervention
from ocr_heads.pipeline import case_study, step1, step2, step3
from ocr_heads.pipeline.experiment import build_parser, default_heads_path

# ---------------------------------------------------------------- their README, as data

README_COMMANDS = [
    # Dataset Generation
    "python step1_niah.py",
    "python step1_passkey.py",
    # OCR-Head and Retrieval Head
    "python step2_ocr_retrieval_head.py --model_id Qwen/Qwen2-VL-2B-Instruct --fine_grained",
    "python step2_ocr_retrieval_head.py --model_id Qwen/Qwen2-VL-7B-Instruct --fine_grained",
    "python step2_ocr_retrieval_head.py --model_id OpenGVLab/InternVL2-8B --fine_grained",
    "python step2_text_retrieval_head.py --model_id Qwen/Qwen2-VL-2B-Instruct",
    "python step2_text_retrieval_head.py --model_id Qwen/Qwen2-VL-7B-Instruct",
    "python step2_text_retrieval_head.py --model_id OpenGVLab/InternVL2-8B",
    "python step3_extracted_heads.py --model_id Qwen/Qwen2-VL-7B-Instruct --te_fg_cg fg",
    "python step3_extracted_heads.py --model_id Qwen/Qwen2-VL-2B-Instruct --te_fg_cg fg",
    "python step3_extracted_heads.py --model_id OpenGVLab/InternVL2-8B --te_fg_cg fg",
    "python step3_extracted_heads.py --model_id Qwen/Qwen2-VL-7B-Instruct --te_fg_cg te",
    "python step3_extracted_heads.py --model_id Qwen/Qwen2-VL-2B-Instruct --te_fg_cg te",
    "python step3_extracted_heads.py --model_id OpenGVLab/InternVL2-8B --te_fg_cg te",
    # Experiment
    "python exp_case.py --fine_grained",
]

# Their Masking section: for task in text image; for dataset in doc mdocs nq hotpot; for masking_head in 10 20.
MASKING_VARIABLES = {"task": ["text", "image"], "dataset": ["doc", "mdocs", "nq", "hotpot"],
                     "masking_head": ["10", "20"]}
MASKING_LOOP = (MASKING_VARIABLES, [
    "python exp_masking.py --datasets $dataset --task $task --model_id OpenGVLab/InternVL2-8B "
    "--num_of_masking_head $masking_head --do_masking --fine_grained",
    "python exp_masking.py --datasets $dataset --task $task --model_id Qwen/Qwen2-VL-2B-Instruct "
    "--num_of_masking_head $masking_head --do_masking --fine_grained",
    "python exp_masking.py --datasets $dataset --task $task --model_id Qwen/Qwen2-VL-7B-Instruct "
    "--num_of_masking_head $masking_head --do_masking --fine_grained",
])
# Their Sink Token section: for task in text image; for dataset in doc mdocs.
SINK_LOOP = ({"task": ["text", "image"], "dataset": ["doc", "mdocs"]}, [
    "python exp_sink.py --datasets $dataset --task $task --tmp 1 --model_id OpenGVLab/InternVL2-8B "
    "--num_of_masking_head 2 --do_masking --unmasking --beta 0.4",
    "python exp_sink.py --datasets $dataset --task $task --tmp 1 --model_id Qwen/Qwen2-VL-7B-Instruct "
    "--num_of_masking_head 2 --do_masking --unmasking --beta 0.4",
])


def head_set(args, experiment: str) -> str:
    """The head set the parsed flags choose, as the named experiment declares it."""
    return get_experiment(experiment).head_set(args)


def expand(loop: tuple[dict[str, list[str]], list[str]]) -> list[tuple[dict[str, str], str]]:
    """The command lines a bash loop runs, in its order, with the loop variables of each."""
    variables, templates = loop
    names = list(variables)
    return [(values, Template(template).substitute(values))
            for combo in itertools.product(*variables.values())
            for values in [dict(zip(names, combo, strict=True))]
            for template in templates]


# ---------------------------------------------------------------- our parsers, by script name


def parse(command: str, models: dict[str, str]) -> tuple[str, object]:
    """Run one command line (model id swapped, nothing else) through our script's parser."""
    words = shlex.split(command)
    assert words[0] == "python"
    script, argv = words[1], [models.get(word, word) for word in words[2:]]
    parsers = {
        "step1_niah.py": lambda: step1.build_parser("niah", "").parse_args(argv),
        "step1_passkey.py": lambda: step1.build_parser("passkey", "").parse_args(argv),
        "step2_ocr_retrieval_head.py": lambda: step2.build_parser("image").parse_args(argv),
        "step2_text_retrieval_head.py": lambda: step2.build_parser("text").parse_args(argv),
        "step3_extracted_heads.py": lambda: step3.parse_args(argv),
        "exp_case.py": lambda: case_study.build_parser().parse_args(argv),
        "exp_masking.py": lambda: build_parser("masking").parse_args(argv),
        "exp_sink.py": lambda: build_parser("sink").parse_args(argv),
    }
    return script, parsers[script]()


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    from ocr_heads.models.tiny.build import build_tiny_internvl

    internvl = build_tiny_internvl(tmp_path_factory.mktemp("models") / "tiny-internvl", seed=0)
    return {"Qwen/Qwen2-VL-2B-Instruct": str(tiny_model_dir), "Qwen/Qwen2-VL-7B-Instruct": str(tiny_model_dir),
            "OpenGVLab/InternVL2-8B": str(internvl)}


def test_the_readme_loops_expand_to_their_command_count():
    assert len(expand(MASKING_LOOP)) == 2 * 4 * 2 * 3
    assert len(expand(SINK_LOOP)) == 2 * 2 * 2
    assert expand(SINK_LOOP)[1][1] == (
        "python exp_sink.py --datasets doc --task text --tmp 1 --model_id Qwen/Qwen2-VL-7B-Instruct "
        "--num_of_masking_head 2 --do_masking --unmasking --beta 0.4")


def test_data_generation_commands(models):
    for command, task, folder in (("python step1_niah.py", "niah", "dataset/niah"),
                                  ("python step1_passkey.py", "passkey", "dataset/passkey")):
        _, args = parse(command, models)
        # Their generators: 150 samples per length, lengths 1k-8k, seed 42, a fixed output folder.
        assert (args.n, args.lengths, args.seed) == (150, [1024, 2048, 4096, 8192], 42)
        assert step1.output_dir(task, args) == Path(folder)


def test_step2_commands(models):
    for command in README_COMMANDS[2:8]:
        script, args = parse(command, models)
        assert args.model_id in models.values() and args.model_id not in models
        # Their step2 scripts read both generated datasets (passkey and NIAH): ours read step1's default outputs.
        assert args.data == [Path("dataset/passkey"), Path("dataset/niah")]
        if script == "step2_ocr_retrieval_head.py":
            assert args.fine_grained is True
        else:
            assert not hasattr(args, "fine_grained")


def test_step3_commands(models):
    for command in README_COMMANDS[8:14]:
        _, args = parse(command, models)
        kind = command.split()[-1]
        name = Path(args.model_id).name
        folder = {"fg": "image", "te": "text"}[kind]
        assert args.scores == Path("scores") / folder / f"{name}_{kind}.json"
        assert args.out == Path("scores") / "heads" / f"{name}_{kind}_documented.json"
        assert (args.min_score, args.min_frequency) == (0.1, 0.1)


def test_exp_case_command(models):
    _, args = parse("python exp_case.py --fine_grained", models)
    # Their case study: 100 haystacks per character of 0-9a-z, seed 42; the data folder defaults to ours.
    assert args.fine_grained is True and args.data is None
    assert (args.n, args.seed) == (100, 42)
    assert case_study.CASE_LENGTHS == (1024,)


def test_masking_commands(models):
    commands = expand(MASKING_LOOP)
    for values, command in commands:
        _, args = parse(command, models)
        assert args.datasets == [values["dataset"]] and args.task == values["task"]
        assert args.num_of_masking_head == int(values["masking_head"])
        assert args.fine_grained is True
        # --do_masking without --is_all_random: the top-k heads of the task's list (OCR for image, retrieval
        # for text), as their exp_masking.py takes them.
        assert head_set(args, "masking") == "top"
        suffix = {"image": "fg", "text": "te"}[values["task"]]
        heads = default_heads_path(args.model_id, args.task)
        assert heads.name == f"{Path(args.model_id).name}_{suffix}_documented.json"


def test_sink_commands(models):
    for values, command in expand(SINK_LOOP):
        _, args = parse(command, models)
        assert args.datasets == [values["dataset"]] and args.task == values["task"]
        assert (args.num_of_masking_head, args.beta, args.tmp) == (2, 0.4, 1)
        # --do_masking --unmasking: their sink model on the top-2 heads.
        assert head_set(args, "sink") == "sink_top"


def test_sink_flags_mean_what_they_mean_in_the_authors_code(tiny_adapter, caplog):
    """exp_sink.py --do_masking alone masks the top-k heads (their loader picks the masking model); without
    --do_masking, --unmasking changes nothing (their loader loads the plain model)."""
    base = ["--datasets", "doc", "--num_of_masking_head", "1"]
    sink = build_parser("sink")
    assert head_set(sink.parse_args([*base, "--do_masking"]), "sink") == "top"
    assert head_set(sink.parse_args(base), "sink") == "none"
    with caplog.at_level(logging.WARNING):
        assert head_set(sink.parse_args([*base, "--unmasking"]), "sink") == "none"
    assert "--unmasking has no effect without --do_masking" in caplog.text

    inputs = tiny_adapter.text_inputs("The pass key is 31415. Remember it.", "What is the pass key?")

    def logits() -> torch.Tensor:
        with torch.no_grad():
            return tiny_adapter.model(**inputs.tensors).logits

    heads = ["l1_h2"]
    cfg = RunConfig("sink", "tiny", "doc", "image", "top", 1, 42, heads)
    with intervention(tiny_adapter, cfg):
        edited = logits()
    with mask_heads(tiny_adapter, heads):
        masked = logits()
    plain = logits()
    torch.testing.assert_close(edited, masked, rtol=0, atol=0)
    assert not torch.allclose(edited, plain)
    sink_cfg = RunConfig("sink", "tiny", "doc", "image", "sink_top", 1, 42, heads, options={"beta": 0.4})
    with intervention(tiny_adapter, sink_cfg):
        redistributed = logits()
    assert not torch.allclose(redistributed, masked) and not torch.allclose(redistributed, plain)


def test_tmp_is_accepted_and_documented_as_no_effect():
    for parser in (build_parser("sink"), build_parser("masking")):
        assert parser.parse_args(["--tmp", "3"]).tmp == 3
        assert "no effect here" in " ".join(parser.format_help().split())


def test_exp_case_generates_its_default_data_when_absent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = case_study.case_data(None, 1, 42, lengths=(64,))
    assert data == Path("dataset/chars")
    samples = case_study.load_samples(data)
    assert sorted(s.answer for s in samples) == sorted(case_study.CHARS)
    # A given --data is used as it is, never generated into.
    assert case_study.case_data(tmp_path / "elsewhere", 1, 42) == tmp_path / "elsewhere"
    assert not (tmp_path / "elsewhere").exists()


def test_step2_reads_several_step1_outputs(passkey_dir, tmp_path):
    from ocr_heads.data import haystack
    from ocr_heads.data.samples import generate_samples

    niah = tmp_path / "niah"
    generate_samples(niah, "niah", 2, [128], 3, haystack.embedded_corpus(), haystack.niah_needle, source="embedded")
    samples = load_sample_dirs([passkey_dir, niah], 2)
    passkey_ids = [s.id for s in case_study.load_samples(passkey_dir)[:2]]
    assert [s.id for s in samples] == [*passkey_ids, "niah_128_0000", "niah_128_0001"]
    assert samples[2].page_paths[0].parent.parent == niah
    with pytest.raises(ValueError, match="is in both"):
        load_sample_dirs([passkey_dir, passkey_dir])
