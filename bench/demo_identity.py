"""Does a change leave the demo's outputs as they were? Runs ``make demo``'s pipeline in an older tree and in
this one and compares every output file and the printed tables.

    python bench/demo_identity.py --base ef0307e            # the commit before the change
    python bench/demo_identity.py --base HEAD~3 --keep /tmp/identity

The older tree is a ``git worktree`` of ``--base`` in a temporary folder (removed afterwards); both demos run
with this interpreter, each importing its own tree's package. Before comparing, each side's own output
folder and repository path are replaced by placeholders and ``elapsed_s`` (wall time) and ``git_sha`` (the
commit that ran) are dropped: what is
left must be byte-identical (score JSONs, head lists, CSVs, sidecars, run configs, PNGs, the report). The
printed tables are compared the same way (stdout; progress bars go to stderr). Exit 0 when identical.
"""

from __future__ import annotations

import argparse
import difflib
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".json", ".jsonl", ".csv", ".html", ".md", ".txt", ".log"}
ELAPSED = re.compile(r'"elapsed_s": [0-9.]+')
GIT_SHA = re.compile(r'"git_sha": "[0-9a-f]+"')  # the commit that ran: differs between the trees by construction
FINISHED = re.compile(r"Demo finished in [0-9.]+ s")


def run_demo(tree: Path, out: Path) -> str:
    """Run the demo of ``tree`` into ``out``; its stdout."""
    done = subprocess.run([sys.executable, "-m", "ocr_heads.demo", "--out", str(out)], cwd=tree, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=True)
    return done.stdout


def normalise(text: str, out: Path, tree: Path) -> str:
    text = text.replace(str(out), "<OUT>").replace(str(tree), "<ROOT>")
    text = GIT_SHA.sub('"git_sha": "<SHA>"', ELAPSED.sub('"elapsed_s": <T>', text))
    return FINISHED.sub("Demo finished in <T> s", text)


def normalised_copy(out: Path, tree: Path, into: Path) -> None:
    shutil.copytree(out, into)
    for path in into.rglob("*"):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            path.write_text(normalise(path.read_text(), out, tree))


def differing_files(left: Path, right: Path) -> tuple[list[str], list[str]]:
    """(files that differ, files only on one side), as paths relative to the folders."""
    names = {p.relative_to(left) for p in left.rglob("*") if p.is_file()}
    others = {p.relative_to(right) for p in right.rglob("*") if p.is_file()}
    differ = sorted(str(n) for n in names & others if not filecmp.cmp(left / n, right / n, shallow=False))
    return differ, sorted(str(n) for n in names ^ others)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision of the tree to compare against")
    parser.add_argument("--keep", type=Path, help="keep both normalised output folders here (else a temp dir)")
    args = parser.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="demo-identity-"))
    old_tree = work / "base-tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(old_tree), args.base], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        printed = {}
        for side, tree in (("base", old_tree), ("this", ROOT)):
            raw = work / f"{side}-raw"
            printed[side] = normalise(run_demo(tree, raw), raw, tree)
            normalised_copy(raw, tree, work / side)
            print(f"{side}: demo of {tree} done", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(old_tree)], cwd=ROOT, check=False)
    differ, one_sided = differing_files(work / "base", work / "this")
    files = sum(1 for p in (work / "this").rglob("*") if p.is_file())
    print(f"{files} output files compared: {len(differ)} differ, {len(one_sided)} on one side only")
    for name in differ + one_sided:
        print(f"  {name}")
    table_diff = list(difflib.unified_diff(printed["base"].splitlines(), printed["this"].splitlines(), "base",
                                           "this", lineterm=""))
    print("printed tables: " + ("identical" if not table_diff else "differ"))
    print("\n".join(table_diff[:60]))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not (differ or one_sided or table_diff) else 1


if __name__ == "__main__":
    raise SystemExit(main())
