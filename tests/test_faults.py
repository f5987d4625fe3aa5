"""Faults of the machine, injected for real: a read-only and a full file system (tmpfs mounts, since root
ignores file modes), no network, Ctrl-C, two writers of one output. Each ends with one line, no traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from ocr_heads.core.io import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounted(tmp_path):
    """``mounted(options)``: a fresh tmpfs under tmp_path mounted with ``options``; skips where mount is not
    permitted (no root, no CAP_SYS_ADMIN)."""
    points: list[Path] = []

    def mount(options: str) -> Path:
        point = tmp_path / f"mnt{len(points)}"
        point.mkdir()
        if not _mount("-t", "tmpfs", "-o", options, "tmpfs", str(point)):
            pytest.skip("mount is not permitted here")
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", str(point)], check=False)


def run(*argv: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def one_error_line(result: subprocess.CompletedProcess, code: int = 2) -> str:
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def score_file(path: Path) -> Path:
    path.write_text(json.dumps({f"l{layer}_h{head}": [0.5, 0.0, 0.25] for layer in range(2) for head in range(4)}))
    return path


def test_read_only_output_is_one_error_line_in_every_command(mounted, tmp_path, tiny_model_dir, passkey_dir):
    readonly = mounted("ro,size=64k")
    scores = score_file(tmp_path / "m_fg.json")
    commands = {
        "step1": ["step1_passkey.py", "--out", str(readonly / "p"), "--n", "1", "--lengths", "64"],
        "step3": ["step3_extracted_heads.py", "--scores", str(scores), "--out", str(readonly / "heads.json")],
        "report": ["-m", "ocr_heads.report", "--scores", str(scores), "--out", str(readonly / "report")],
        "step2": ["step2_ocr_retrieval_head.py", "--model_id", str(tiny_model_dir), "--data", str(passkey_dir),
                  "--out", str(readonly), "--n", "1", "--max_new_tokens", "2"],
        "masking": ["exp_masking.py", "--model_id", str(tiny_model_dir), "--datasets", "passkey", "--data",
                    str(passkey_dir), "--n", "1", "--out", str(readonly)],
    }
    for name, argv in commands.items():
        line = one_error_line(run(*argv))
        assert "Read-only file system" in line, (name, line)


def test_full_disk_is_one_error_line(mounted):
    full = mounted("size=64k")
    # Page images of 40 samples do not fit in 64 KiB: ENOSPC mid-run.
    line = one_error_line(run("step1_passkey.py", "--out", str(full / "p"), "--n", "40", "--lengths", "256"))
    assert "No space left on device" in line and "the disk is full" in line


def test_a_hub_id_without_network_fails_fast_with_one_line(tmp_path, passkey_dir):
    # No HF_HUB_OFFLINE, and a hub that refuses connections: one check, no minute of retries.
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    started = time.monotonic()
    result = subprocess.run([sys.executable, "step2_ocr_retrieval_head.py", "--model_id", "Qwen/Qwen2-VL-2B-Instruct",
                             "--data", str(passkey_dir), "--out", str(tmp_path / "o")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    line = one_error_line(result)
    assert "the Hugging Face hub is unreachable" in line and "--model_id DIR" in line
    step1 = subprocess.run([sys.executable, "step1_passkey.py", "--source", "hf", "--out", str(tmp_path / "p"),
                            "--n", "1", "--lengths", "1024"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    line = one_error_line(step1)
    assert "the Hugging Face hub is unreachable" in line and "--source embedded" in line
    assert elapsed < 40  # imports take most of it; huggingface_hub's retries took 42-51 s before


def _step2_cmd(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "step2_ocr_retrieval_head.py", "--model_id", str(model), "--data", str(data), "--out",
            str(out), "--max_new_tokens", "8", *extra]


def _wait_for_lines(log: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and len(log.read_text().splitlines()) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"step2 ended early: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"{log} never got {count} lines")


@pytest.fixture(scope="module")
def many_samples(tmp_path_factory):
    """Enough samples (24) that a step2 run is still going when it is signalled."""
    from ocr_heads.data import haystack
    from ocr_heads.data.samples import generate_samples

    out = tmp_path_factory.mktemp("many")
    generate_samples(out, "passkey", 24, [128], 3, haystack.embedded_corpus(),
                     lambda rng: haystack.passkey_needle(rng), source="embedded")
    return out


def test_ctrl_c_exits_130_with_one_line_and_the_rerun_resumes(tiny_model_dir, many_samples, tmp_path):
    out = tmp_path / "o"
    log = out / "image" / "tiny-qwen2-vl_fg.samples.jsonl"
    process = subprocess.Popen(_step2_cmd(tiny_model_dir, many_samples, out), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _wait_for_lines(log, 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("interrupted after ") and last.endswith(" samples; rerun the same command to resume")
    done = len(list(read_jsonl(log)))
    assert 2 <= done < 24
    resumed = subprocess.run(_step2_cmd(tiny_model_dir, many_samples, out), cwd=ROOT, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{done} of 24 samples already done, resuming" in resumed.stderr


def test_a_second_writer_of_one_output_is_refused_and_nothing_is_logged_twice(tiny_model_dir, many_samples, tmp_path):
    """A writer holds the output's lock in another process (as a running step2 does, held for its whole run, so
    the check does not depend on which process is faster); step2 on the same --out is refused and writes nothing;
    once the holder is gone, step2 gets the lock and logs every sample once."""
    out = tmp_path / "o"
    log = out / "image" / "tiny-qwen2-vl_fg.samples.jsonl"
    lock = str(log.with_name("tiny-qwen2-vl_fg.lock"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from ocr_heads.core.io import lock_output; "
         f"lock_output({lock!r}); print('locked', flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = run(*_step2_cmd(tiny_model_dir, many_samples, out, "--n", "12")[1:])
        line = one_error_line(second)
        assert "is being written by another process" in line and "--wait" in line
        assert not log.exists() or not list(read_jsonl(log))
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # The lock died with its holder: the next writer gets it.
    third = run(*_step2_cmd(tiny_model_dir, many_samples, out, "--n", "12")[1:])
    assert third.returncode == 0, third.stderr[-2000:]
    ids = Counter(record["id"] for record in read_jsonl(log))
    assert len(ids) == 12 and set(ids.values()) == {1}


def test_wait_queues_behind_the_first_writer(tiny_model_dir, many_samples, tmp_path):
    out = tmp_path / "o"
    log = out / "image" / "tiny-qwen2-vl_fg.samples.jsonl"
    first = subprocess.Popen(_step2_cmd(tiny_model_dir, many_samples, out, "--n", "6"), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_lines(log, 1, first)
    second = run(*_step2_cmd(tiny_model_dir, many_samples, out, "--n", "6", "--wait")[1:])
    first.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    # (Whether it had to wait depends on timing; either way it resumed the first run's log, never redid it.)
    assert "6 of 6 samples already done" in second.stderr
    ids = Counter(record["id"] for record in read_jsonl(log))
    assert len(ids) == 6 and set(ids.values()) == {1}
