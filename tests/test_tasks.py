"""Task loaders on small fixture files written in each dataset's real format; never the network."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from ocr_heads.tasks import Example, all_tasks, get_task  # noqa: E402
from ocr_heads.tasks.base import TEXT_QA_INSTRUCTION  # noqa: E402

MP_PAGE_COLUMNS = 20


def page(text: str, width: int = 120, height: int = 60, mode: str = "L") -> Image.Image:
    """A small rendered page; the width encodes which page it is so tests can check order."""
    image = Image.new(mode, (width, height), 255 if mode == "L" else (255, 255, 255))
    ImageDraw.Draw(image).text((4, 4), text, fill=0 if mode == "L" else (0, 0, 0))
    return image


def write_parquet(path: Path, rows: dict, features) -> None:
    from datasets import Dataset

    path.parent.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(rows, features=features).to_parquet(str(path))


# ---------------------------------------------------------------- DocVQA


def docvqa_rows(ids: list[str]) -> dict:
    return {
        "questionId": ids,
        "question": [f"What is written on page {i}?" for i in ids],
        "answers": [[f"text {i}", f"TEXT-{i}"] for i in ids],
        "docId": [int(i) * 10 for i in ids],
        "image": [page(f"text {i}", width=100 + int(i)) for i in ids],
    }


@pytest.fixture(scope="module")
def docvqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets import Features, Sequence, Value
    from datasets import Image as ImageFeature

    features = Features(
        {
            "questionId": Value("string"),
            "question": Value("string"),
            "answers": Sequence(Value("string")),
            "docId": Value("int64"),
            "image": ImageFeature(),
        }
    )
    root = tmp_path_factory.mktemp("DocVQA")
    # Hub snapshot layout: one folder per config, split-named shards.
    shard = "validation-00000-of-00001.parquet"
    write_parquet(root / "DocVQA" / shard, docvqa_rows(["1", "2", "3"]), features)
    write_parquet(root / "DocVQA" / "test-00000-of-00001.parquet", docvqa_rows(["91"]), features)
    write_parquet(root / "InfographicVQA" / shard, docvqa_rows(["81"]), features)
    return root


def test_doc_examples(docvqa_dir: Path) -> None:
    task = get_task("doc")
    examples = list(task.examples(docvqa_dir))
    # Only the DocVQA config's validation split: not test (91), not InfographicVQA (81).
    assert [ex.id for ex in examples] == ["1", "2", "3"]
    first = examples[0]
    assert first.golds == ["text 1", "TEXT-1"]
    assert first.context is None
    assert first.num_pages == 1
    assert first.pages[0].mode == "RGB" and first.pages[0].size == (101, 60)
    assert first.meta["doc_id"] == 10
    assert first.prompt == "What is written on page 1?\nAnswer the question using a single word or phrase."
    assert task.metrics == ("anls",) and task.modality == "image"
    assert task.score("Text 1", first) == {"anls": 1.0}


def test_doc_limit_and_skip_ids(docvqa_dir: Path) -> None:
    task = get_task("doc")
    assert [ex.id for ex in task.examples(docvqa_dir, n=2)] == ["1", "2"]
    # Finished ids still count towards n: a resumed run covers the same rows.
    assert [ex.id for ex in task.examples(docvqa_dir, n=2, skip_ids={"1"})] == ["2"]
    assert list(task.examples(docvqa_dir, n=0)) == []


def test_doc_from_single_file_and_saved_dataset(docvqa_dir: Path, tmp_path: Path) -> None:
    import datasets

    task = get_task("doc")
    one_file = docvqa_dir / "DocVQA" / "test-00000-of-00001.parquet"
    assert [ex.id for ex in task.examples(one_file)] == ["91"]

    saved = tmp_path / "saved"
    datasets.load_dataset("parquet", data_files=[str(one_file)], split="train").save_to_disk(str(saved))
    examples = list(task.examples(saved))
    assert [ex.id for ex in examples] == ["91"] and examples[0].pages[0].size == (191, 60)


def test_doc_missing_split(tmp_path: Path, docvqa_dir: Path) -> None:
    only_test = tmp_path / "only_test"
    only_test.mkdir()
    (only_test / "test-00000-of-00001.parquet").write_bytes(
        (docvqa_dir / "DocVQA" / "test-00000-of-00001.parquet").read_bytes()
    )
    with pytest.raises(FileNotFoundError, match="split 'validation'"):
        list(get_task("doc").examples(only_test))


# ---------------------------------------------------------------- MP-DocVQA


@pytest.fixture(scope="module")
def mpdocvqa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    documents = {"10": 3, "11": 9, "12": 1}  # questionId -> number of pages; 9 > 8 must be skipped
    rows: dict[str, list] = {"questionId": [], "question": [], "answers": [], "answer_page_idx": []}
    for column in range(1, MP_PAGE_COLUMNS + 1):
        rows[f"image_{column}"] = []
    for qid, num_pages in documents.items():
        rows["questionId"].append(qid)
        rows["question"].append(f"Question {qid}?")
        rows["answers"].append(repr([f"answer {qid}", "alt"]))  # stored as a list literal string
        rows["answer_page_idx"].append(num_pages - 1)
        for column in range(1, MP_PAGE_COLUMNS + 1):
            image = page(f"{qid} p{column}", width=100 + column) if column <= num_pages else None
            rows[f"image_{column}"].append(image)
    features = Features(
        {
            "questionId": Value("string"),
            "question": Value("string"),
            "answers": Value("string"),
            "answer_page_idx": Value("int64"),
            **{f"image_{c}": ImageFeature() for c in range(1, MP_PAGE_COLUMNS + 1)},
        }
    )
    root = tmp_path_factory.mktemp("MP-DocVQA")
    write_parquet(root / "data" / "val-00000-of-00001.parquet", rows, features)
    return root


def test_mdocs_examples(mpdocvqa_dir: Path) -> None:
    task = get_task("mdocs")
    examples = list(task.examples(mpdocvqa_dir))
    assert [ex.id for ex in examples] == ["10", "12"]  # the 9-page document is passed over
    three = examples[0]
    assert three.num_pages == 3
    assert [p.size[0] for p in three.pages] == [101, 102, 103]  # page order kept
    assert all(p.mode == "RGB" for p in three.pages)
    assert three.golds == ["answer 10", "alt"]
    assert three.meta["answer_page_idx"] == 2
    assert examples[1].num_pages == 1
    # The skipped row does not count towards n.
    assert [ex.id for ex in task.examples(mpdocvqa_dir, n=2)] == ["10", "12"]
    assert task.score("ANSWER 10", three) == {"anls": 1.0}


# ---------------------------------------------------------------- NQ (DPR)


def ctx(title: str, text: str, title_score: int = 0) -> dict:
    return {"title": title, "text": text, "score": 1000, "title_score": title_score, "passage_id": title}


@pytest.fixture(scope="module")
def nq_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = [
        {
            "dataset": "nq_dev_psgs_w100",
            "question": "who wrote the tiny book",
            "answers": ["Ann Author", "A. Author"],
            "positive_ctxs": [
                ctx("Tiny Book", "The tiny book was written by Ann Author.", 1),
                ctx("Tiny Book", "Ann Author wrote it in 1900.", 1),
                ctx("Other Page", "A passage that mentions Ann Author in passing.", 0),
            ],
            "negative_ctxs": [ctx(f"Neg {i}", f"negative passage {i}") for i in range(8)],
            "hard_negative_ctxs": [ctx("Hard", "a hard negative passage")],
        },
        {
            "dataset": "nq_dev_psgs_w100",
            "question": "an unanswerable question",
            "answers": ["nothing"],
            "positive_ctxs": [ctx("Loose", "no title match", 0)],
            "negative_ctxs": [ctx(f"Neg {i}", f"negative passage {i}") for i in range(8)],
            "hard_negative_ctxs": [],
        },
        {
            "dataset": "nq_dev_psgs_w100",
            "question": "few negatives",
            "answers": ["yes"],
            "positive_ctxs": [ctx("Few", "yes it is", 1)],
            "negative_ctxs": [ctx(f"Few neg {i}", f"few negative {i}") for i in range(3)],
            "hard_negative_ctxs": [],
        },
    ]
    path = tmp_path_factory.mktemp("nq") / "biencoder-nq-dev.json"
    path.write_text(json.dumps(records))
    return path


def passage_texts(example: Example) -> list[str]:
    return [block.split("): ", 1)[1] for block in example.context.split("\n\n")]


def test_nq_context_composition(nq_file: Path) -> None:
    task = get_task("nq")
    examples = list(task.examples(nq_file, seed=0))
    assert [ex.id for ex in examples] == ["0", "2"]  # row 1 has no title-matched positive
    first = examples[0]
    texts = passage_texts(first)
    assert len(texts) == 7  # 2 positives with title_score 1 + 5 negatives
    assert "The tiny book was written by Ann Author." in texts
    assert "Ann Author wrote it in 1900." in texts
    assert "A passage that mentions Ann Author in passing." not in texts  # title_score 0
    assert "a hard negative passage" not in texts
    negatives = [t for t in texts if t.startswith("negative passage")]
    assert len(negatives) == 5 and len(set(negatives)) == 5
    assert sorted(first.meta["titles"][i] for i in first.meta["evidence_positions"]) == ["Tiny Book"] * 2
    assert first.context.startswith("Evidence 1 (")
    assert first.golds == ["Ann Author", "A. Author"] and first.pages is None
    assert first.prompt.endswith(f"\n\nQuestion: who wrote the tiny book\n{TEXT_QA_INSTRUCTION}")
    assert first.prompt.startswith(first.context)
    # Fewer than 5 negatives: all of them are used.
    assert len(passage_texts(examples[1])) == 1 + 3
    assert task.score("ann author.", first) == {"em": 1.0, "f1": 1.0}


def test_nq_seeded_and_shuffled(nq_file: Path) -> None:
    task = get_task("nq")
    again = [ex.context for ex in task.examples(nq_file, seed=0)]
    assert again == [ex.context for ex in task.examples(nq_file, seed=0)]
    firsts = [next(iter(task.examples(nq_file, seed=seed))) for seed in range(8)]
    assert len({ex.context for ex in firsts}) > 1  # the seed changes negatives and order
    positions = {tuple(ex.meta["evidence_positions"]) for ex in firsts}
    assert positions != {(0, 1)}  # evidence is not always first: the passages are shuffled
    # An example's context depends only on (seed, id), not on which other rows are built.
    alone = next(iter(task.examples(nq_file, seed=3, skip_ids={"0"})))
    together = list(task.examples(nq_file, seed=3))[1]
    assert alone.id == together.id == "2" and alone.context == together.context


# ---------------------------------------------------------------- HotpotQA


@pytest.fixture(scope="module")
def hotpot_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    records = []
    for q in range(4):
        titles = [f"Q{q} Title {t}" for t in range(6)]
        records.append(
            {
                "_id": f"hp{q}",
                "question": f"Which link joins Q{q} Title 0 and Q{q} Title 1?",
                "answer": f"link {q}",
                "type": "bridge",
                "level": "easy",
                # Title 1 appears in two facts: its paragraph must still be included once.
                "supporting_facts": [[titles[0], 0], [titles[1], 0], [titles[1], 1]],
                "context": [[title, [f"{title} first.", f" {title} second."]] for title in titles],
            }
        )
    path = tmp_path_factory.mktemp("hotpot") / "hotpot_dev_distractor_v1.json"
    path.write_text(json.dumps(records))
    return path


def test_hotpot_context_composition(hotpot_file: Path) -> None:
    task = get_task("hotpot")
    all_paragraphs = {f"Q{q} Title {t}" for q in range(4) for t in range(6)}
    counts = set()
    for seed in range(10):
        for example in task.examples(hotpot_file, seed=seed):
            q = example.id[2:]
            titles = example.meta["titles"]
            support = {f"Q{q} Title 0", f"Q{q} Title 1"}
            assert sorted(titles[i] for i in example.meta["evidence_positions"]) == sorted(support)
            assert f"Q{q} Title 0 first. Q{q} Title 0 second." in example.context  # sentences rejoined
            others = [t for t in titles if t not in support]
            assert 1 <= len(others) <= 5
            assert len(set(titles)) == len(titles)  # no paragraph twice
            assert set(others) <= all_paragraphs
            counts.add(len(others))
            assert example.golds == [f"link {q}"]
    assert len(counts) > 1  # the number of random paragraphs varies with the seed
    # Random paragraphs come from the whole dev set, as in the paper's code, not only this row.
    example = next(iter(task.examples(hotpot_file, seed=0)))
    assert task.metrics == ("em", "f1") and task.modality == "text"
    assert example.meta["type"] == "bridge"
    seen_foreign = any(
        not title.startswith("Q0 ")
        for seed in range(10)
        for title in next(iter(task.examples(hotpot_file, seed=seed))).meta["titles"]
    )
    assert seen_foreign


def test_hotpot_seeded(hotpot_file: Path) -> None:
    task = get_task("hotpot")
    first = [ex.context for ex in task.examples(hotpot_file, seed=5)]
    assert first == [ex.context for ex in task.examples(hotpot_file, seed=5)]
    assert first != [ex.context for ex in task.examples(hotpot_file, seed=6)]


# ---------------------------------------------------------------- passkey (step1 output)


@pytest.fixture(scope="module")
def passkey_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("passkey")
    records = []
    for i, (key, num_pages) in enumerate([(48213, 2), (77001, 1)]):
        folder = root / f"s{i}"
        folder.mkdir()
        pages = []
        for p in range(num_pages):
            page(f"The pass key is {key}." if p == 0 else "filler", width=200 + p, mode="RGB").save(
                folder / f"page_{p}.png"
            )
            pages.append(f"s{i}/page_{p}.png")
        records.append(
            {
                "id": f"passkey_{i}",
                "question": "What is the pass key?",
                "answer": key,  # step1 may store it as a number; golds are strings
                "context": f"Some haystack. The pass key is {key}. Remember it. More haystack.",
                "pages": pages,
                "evidence": {"0": [[4, 4, 10, 12]] * 5},
            }
        )
    (root / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_passkey_image(passkey_dir: Path) -> None:
    task = get_task("passkey")
    examples = list(task.examples(passkey_dir))
    assert [ex.num_pages for ex in examples] == [2, 1]
    first = examples[0]
    assert [p.size[0] for p in first.pages] == [200, 201]
    assert first.golds == ["48213"] and first.context is None
    assert first.meta["evidence"] == {"0": [[4, 4, 10, 12]] * 5}
    assert first.prompt == "What is the pass key?\nReply with the answer only."
    assert task.score("The pass key is 48213.", first) == {"accuracy": 1.0, "em": 0.0}
    assert task.score("48213", first) == {"accuracy": 1.0, "em": 1.0}


def test_passkey_text(passkey_dir: Path) -> None:
    task = get_task("passkey_text")
    examples = list(task.examples(passkey_dir / "samples.jsonl", n=1))
    assert len(examples) == 1
    example = examples[0]
    assert example.pages is None
    assert example.context.startswith("Some haystack. The pass key is 48213.")
    question = "Question: What is the pass key?\nReply with the answer only."
    assert example.prompt == f"{example.context}\n\n{question}"
    assert task.modality == "text"


def test_passkey_errors(tmp_path: Path, passkey_dir: Path) -> None:
    task = get_task("passkey")
    with pytest.raises(ValueError, match="no default source"):
        list(task.examples())
    with pytest.raises(FileNotFoundError, match="run step1_passkey.py"):
        task.examples(tmp_path)  # bad input fails at the call, before iteration
    (tmp_path / "samples.jsonl").write_text(json.dumps({"id": "x", "question": "q"}) + "\n")
    with pytest.raises(ValueError, match="lacks"):
        list(task.examples(tmp_path))
    broken = tmp_path / "broken"
    broken.mkdir()
    record = json.loads((passkey_dir / "samples.jsonl").read_text().splitlines()[1])
    (broken / "samples.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(FileNotFoundError, match="image file missing"):
        list(task.examples(broken))


# ---------------------------------------------------------------- registry and bad input


def test_registry() -> None:
    assert set(all_tasks()) == {"doc", "mdocs", "nq", "hotpot", "passkey", "passkey_text", "slide"}
    assert {name: task.metrics for name, task in all_tasks().items()} == {
        "doc": ("anls",),
        "mdocs": ("anls",),
        "nq": ("em", "f1"),
        "hotpot": ("em", "f1"),
        "passkey": ("accuracy", "em"),
        "passkey_text": ("accuracy", "em"),
        "slide": ("em", "f1"),
    }
    with pytest.raises(KeyError, match="registered: doc, hotpot, mdocs"):
        get_task("squad")


def test_bad_json_input(tmp_path: Path) -> None:
    task = get_task("nq")
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(task.examples(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        list(task.examples(bad))
    bad.write_text(json.dumps({"data": []}))
    with pytest.raises(ValueError, match="JSON list"):
        list(task.examples(bad))
    # A HotpotQA file handed to the NQ task is named as the wrong file, not a KeyError deep inside.
    bad.write_text(json.dumps([{"_id": "x", "question": "q", "answer": "a"}]))
    with pytest.raises(ValueError, match="right file"):
        list(task.examples(bad))


def test_bad_hf_input(tmp_path: Path, nq_file: Path) -> None:
    task = get_task("doc")
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(task.examples("./no/such/dir"))
    with pytest.raises(FileNotFoundError, match="no .parquet"):
        list(task.examples(tmp_path))
    text_file = tmp_path / "rows.txt"
    text_file.write_text("not a dataset")
    with pytest.raises(ValueError, match="unsupported file type"):
        list(task.examples(text_file))
    # A JSON file of the wrong dataset: the missing columns are named.
    with pytest.raises(ValueError, match="missing columns"):
        list(task.examples(nq_file))


def test_example_validation() -> None:
    with pytest.raises(ValueError, match="golds"):
        Example(id="x", question="q", golds=[])
    with pytest.raises(ValueError, match="empty list"):
        Example(id="x", question="q", golds=["a"], pages=[])
    assert Example(id="x", question="q", golds=["a"]).prompt == "q"


def test_default_source_prefers_dataset_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, nq_file: Path
) -> None:
    import ocr_heads.tasks.loaders as loaders

    monkeypatch.setattr(loaders, "DATASET_DIR", tmp_path)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    task = get_task("nq")
    # No local copy: the default is the public URL, which an offline machine refuses to fetch.
    assert task.resolve_source() == task.default_source
    with pytest.raises(FileNotFoundError, match="download.sh"):
        task.examples()
    # download.sh's layout: dataset/nq/biencoder-nq-dev.json is used without asking.
    (tmp_path / "nq").mkdir()
    (tmp_path / "nq" / "biencoder-nq-dev.json").write_bytes(nq_file.read_bytes())
    assert [ex.id for ex in task.examples()] == ["0", "2"]
