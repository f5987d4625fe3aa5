"""The one registry mechanism (ocr_heads.core.registry) and the registries built on it; the torch-free parts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ocr_heads.core.registry import DuplicateName, Registry, declared, discover, lazy, resolve


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway package: two declaring modules, a helper, a private module and a subpackage."""
    root = tmp_path / "regpkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("raise AssertionError('subpackages are not discovered')\n")
    (root / "_private.py").write_text("raise AssertionError('private modules are not discovered')\n")
    (root / "b_entry.py").write_text("from types import SimpleNamespace\nENTRY = SimpleNamespace(name='b')\n")
    (root / "a_entry.py").write_text("from types import SimpleNamespace\nENTRY = SimpleNamespace(name='a')\n")
    (root / "helper.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "regpkg"
    for name in [name for name in sys.modules if name == "regpkg" or name.startswith("regpkg.")]:
        del sys.modules[name]


def test_discovery_imports_modules_by_name_and_collects_declarations(package):
    assert [module.__name__ for module in discover(package)] == ["regpkg.a_entry", "regpkg.b_entry", "regpkg.helper"]
    registry = Registry("entry", package, declared("ENTRY"))
    found = registry.all()
    assert list(found) == ["a", "b"]
    assert registry.all() == found  # cached: the same entries, no second discovery
    assert registry.get("a") is found["a"]
    with pytest.raises(KeyError, match=r"^unknown entry 'c' \(registered: a, b\)$"):
        registry.get("c")


def test_decorator_registration_and_name_clashes(package):
    registry: Registry = Registry("loader", package)

    @registry.register("x", "y")
    def loader() -> None: ...

    registry.register("x")(loader)  # the same object again (a re-export) is not a clash
    assert registry.all() == {"x": loader, "y": loader}
    with pytest.raises(DuplicateName, match="loader 'x' is registered twice"):
        registry.register("x")(lambda: None)


def test_declared_clash_is_refused(package, tmp_path):
    clash = "from types import SimpleNamespace\nENTRY = SimpleNamespace(name='a')\n"
    (tmp_path / "regpkg" / "c_entry.py").write_text(clash)
    with pytest.raises(DuplicateName, match="entry 'a' is registered twice"):
        Registry("entry", package, declared("ENTRY")).all()


def test_lazy_reference_imports_on_first_call():
    join = lazy("os.path:join")
    assert join.__name__ == "join" and join("a", "b") == resolve("os.path:join")("a", "b")
    with pytest.raises(ValueError, match="module:object"):
        resolve("os.path.join")


def test_every_registry_finds_its_entries():
    from ocr_heads.experiments.registry import all_experiments
    from ocr_heads.models import supported_model_types
    from ocr_heads.models.tiny.build import builders
    from ocr_heads.scores import all_scores
    from ocr_heads.tasks import all_tasks

    assert list(all_scores()) == ["first_token_mass", "image_mass", "ocr", "ocr_mass", "prefill", "question_mass",
                                 "retrieval"]
    assert list(all_experiments()) == ["masking", "sink"]
    assert list(all_tasks()) == ["doc", "hotpot", "mdocs", "nq", "passkey", "passkey_text"]
    assert {"qwen2_vl", "internvl", "internvl_chat", "gemma3", "smolvlm"} <= set(supported_model_types())
    assert {"qwen2_vl", "internvl", "gemma3", "llava_onevision", "smolvlm"} <= set(builders())


def _run_without_torch(code: str) -> None:
    """Run ``code`` in a fresh interpreter and assert torch was never imported."""
    script = textwrap.dedent(code) + "\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr


def test_scores_report_and_experiment_titles_stay_torch_free():
    _run_without_torch("""
        import ocr_heads.report, ocr_heads.scores, ocr_heads.scores.files
        from ocr_heads.experiments.registry import all_experiments
        from ocr_heads.scores import all_scores
        all_scores()
        assert [e.title for e in all_experiments().values()] == ["Masking", "Sink redistribution"]
    """)


def test_report_with_results_stays_torch_free(tmp_path):
    """A report that reads a results CSV lists the experiments (their titles) without loading torch."""
    scores = tmp_path / "toy_fg.json"
    scores.write_text('{"l0_h0": [0.5, 0.0], "l0_h1": [0.0, 0.0], "l1_h0": [1.0, 1.0], "l1_h1": [0.2, 0.0]}')
    results = tmp_path / "results"
    results.mkdir()
    (results / "masking.csv").write_text(
        "model,protocol,dataset,task,head_set,k,seed,metric,value,n,note\n"
        "toy,paper,doc,image,none,0,0,anls,0.5,4,\n"
        "toy,paper,doc,image,top,2,0,anls,0.25,4,\n")
    _run_without_torch(f"""
        from ocr_heads.report.__main__ import main
        assert main(["--scores", {str(scores)!r}, "--results", {str(results)!r}, "--out", {str(tmp_path / "r")!r}]) == 0
        assert "Masking" in open({str(tmp_path / "r" / "index.html")!r}).read()
    """)
