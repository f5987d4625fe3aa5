"""Nothing computed is lost: SIGKILL mid-run, torn log lines, multi-process runs, bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocr_heads.core.io import append_jsonl, read_jsonl
from ocr_heads.data import haystack
from ocr_heads.data.samples import generate_samples
from ocr_heads.pipeline.step2 import main as step2_main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def many_samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("many")
    generate_samples(out, "passkey", 16, [400], 5, haystack.embedded_corpus(), haystack.passkey_needle)
    return out


def _ids(log: Path) -> list[str]:
    return [r["id"] for r in read_jsonl(log)]


LAUNCHER = Path(sys.executable).parent / "accelerate"
needs_accelerate = pytest.mark.skipif(shutil.which("accelerate", path=str(LAUNCHER.parent)) is None,
                                      reason="accelerate launcher not installed")


def accelerate_two_processes(script: str, args: list[str], allow_empty: bool = False) -> None:
    """``accelerate launch`` with 2 CPU processes (gloo), as a multi-GPU user would launch it.

    ``allow_empty``: a step2 run of the random model that never writes the answer ends with exit 3
    (files written, no events); the launcher then fails too, and the merged files are still compared.
    """
    result = subprocess.run([str(LAUNCHER), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                             "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / script), *args],
                            capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)
    empty = allow_empty and b"holds no answer-token events" in result.stderr
    assert result.returncode == 0 or empty, result.stderr.decode()[-2000:]


def masking_args(model_dir: Path, data: Path, tmp_path: Path, n: int, new_tokens: int) -> list[str]:
    """exp_masking on text passkeys, masking one head from a one-head list."""
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"heads": [{"head": "l1_h1", "score": 0.5, "frequency": 0.5}]}))
    return ["--model_id", str(model_dir), "--datasets", "passkey_text", "--data", str(data), "--task", "text",
            "--heads", str(heads), "--do_masking", "--num_of_masking_head", "1", "--n", str(n),
            "--max_new_tokens", str(new_tokens)]


def kill_after_records(cmd: list[str], log: Path, records: int, timeout: float = 120) -> int:
    """Start ``cmd``, SIGKILL it once ``log`` holds ``records`` lines; returns the lines seen then."""
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if log.exists() and len(log.read_text().splitlines()) >= records:
                process.send_signal(signal.SIGKILL)
                break
            if process.poll() is not None:
                pytest.fail("the run finished before it could be killed")
            time.sleep(0.02)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    return len(log.read_text().splitlines())


def step2_ok(code: int, out: Path) -> bool:
    """0, also for a run whose files hold no event: the random model need not write the answer (its meta says
    so); a model without the random-weights mark would exit 3 (tests/test_outputs.py, item 4)."""
    meta = json.loads((out / "text" / "tiny-qwen2-vl_te.meta.json").read_text())
    return code == 0 and "noise" in meta["warning"]


def test_step2_survives_sigkill_and_resumes_to_identical_bytes(tiny_model_dir, many_samples, tmp_path):
    args = ["--model_id", str(tiny_model_dir), "--data", str(many_samples), "--max_new_tokens", "16"]
    assert step2_ok(step2_main("text", [*args, "--out", str(tmp_path / "clean")]), tmp_path / "clean")
    crashed = tmp_path / "crashed"
    log = crashed / "text" / "tiny-qwen2-vl_te.samples.jsonl"
    cmd = [sys.executable, str(ROOT / "step2_text_retrieval_head.py"), *args, "--out", str(crashed)]
    seen = kill_after_records(cmd, log, records=2)
    assert 2 <= seen < 16 and not (crashed / "text" / "tiny-qwen2-vl_te.json").exists()
    # A torn last line, as a kill mid-write leaves it: detected and redone, not crashed on.
    with log.open("a") as handle:
        handle.write('{"id": "passkey_400_00')
    assert step2_ok(step2_main("text", [*args, "--out", str(crashed)]), crashed)
    ids = _ids(log)
    assert len(ids) == len(set(ids)) == 16, "a sample was scored twice or lost"
    for name in ("tiny-qwen2-vl_te.json", "tiny-qwen2-vl_te_mean.json"):
        assert (crashed / "text" / name).read_bytes() == (tmp_path / "clean" / "text" / name).read_bytes()


def test_exp_masking_survives_sigkill(tiny_model_dir, many_samples, tmp_path):
    from ocr_heads.pipeline.experiment import masking_main

    args = masking_args(tiny_model_dir, many_samples, tmp_path, n=16, new_tokens=16)
    assert masking_main([*args, "--out", str(tmp_path / "clean")]) == 0
    crashed = tmp_path / "crashed"
    cmd = [sys.executable, str(ROOT / "exp_masking.py"), *args, "--out", str(crashed)]
    run_dir = crashed / "masking" / "tiny-qwen2-vl"
    log = run_dir / "passkey_text_text_top_k1.samples.jsonl"  # the run's stem
    assert kill_after_records(cmd, log, records=2) < 16
    assert masking_main([*args, "--out", str(crashed)]) == 0
    ids = _ids(log)
    assert len(ids) == len(set(ids)) == 16
    clean = json.loads((tmp_path / "clean" / "masking" / "tiny-qwen2-vl" / log.name.replace(".samples.jsonl",
                                                                                            ".json")).read_text())
    resumed = json.loads((run_dir / log.name.replace(".samples.jsonl", ".json")).read_text())
    assert resumed == clean


def test_torn_line_in_the_middle_is_an_error_not_silently_dropped(tmp_path):
    log = tmp_path / "x.jsonl"
    append_jsonl(log, {"id": "a"})
    with log.open("a") as handle:
        handle.write('{"id": "b"')  # torn tail
    append_jsonl(log, {"id": "c"})  # repairs the tail before appending
    assert [r["id"] for r in read_jsonl(log)] == ["a", "c"]
    log.write_text('{"id": "a"}\n{"broken\n{"id": "c"}\n')
    with pytest.raises(ValueError, match="x.jsonl:2 is not valid JSON"):
        list(read_jsonl(log))


@needs_accelerate
def test_accelerate_two_processes_equal_one(tiny_model_dir, many_samples, tmp_path):
    args = ["--model_id", str(tiny_model_dir), "--data", str(many_samples), "--max_new_tokens", "8", "--n", "8"]
    assert step2_ok(step2_main("text", [*args, "--out", str(tmp_path / "one")]), tmp_path / "one")
    accelerate_two_processes("step2_text_retrieval_head.py", [*args, "--out", str(tmp_path / "two")], allow_empty=True)
    logs = sorted(p.name for p in (tmp_path / "two" / "text").glob("*.samples.jsonl"))
    assert logs == ["tiny-qwen2-vl_te.shard0of2.samples.jsonl", "tiny-qwen2-vl_te.shard1of2.samples.jsonl"]
    for name in ("tiny-qwen2-vl_te.json", "tiny-qwen2-vl_te_mean.json"):
        assert (tmp_path / "two" / "text" / name).read_bytes() == (tmp_path / "one" / "text" / name).read_bytes()


@needs_accelerate
def test_accelerate_exp_masking_equals_one_process(tiny_model_dir, many_samples, tmp_path):
    from ocr_heads.pipeline.experiment import masking_main

    args = masking_args(tiny_model_dir, many_samples, tmp_path, n=8, new_tokens=8)
    assert masking_main([*args, "--out", str(tmp_path / "one")]) == 0
    accelerate_two_processes("exp_masking.py", [*args, "--out", str(tmp_path / "two")])
    run_dir = Path("masking") / "tiny-qwen2-vl"
    logs = sorted(p.name for p in (tmp_path / "two" / run_dir).glob("*.samples.jsonl"))
    assert logs == [f"passkey_text_text_top_k1.shard{i}of2.samples.jsonl" for i in range(2)]
    name = "passkey_text_text_top_k1.json"
    assert (tmp_path / "two" / run_dir / name).read_bytes() == (tmp_path / "one" / run_dir / name).read_bytes()
    assert (tmp_path / "two" / "masking.csv").read_bytes() == (tmp_path / "one" / "masking.csv").read_bytes()
