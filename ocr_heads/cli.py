"""The console command: ``ocr-heads <command> [args]`` (installed by ``pip install .`` / ``make install``).

Each command runs the very main that its top-level script or ``python -m`` name runs, with the rest of
the command line passed through, and exits with that main's status. A command's module is imported only
when that command runs, so ``ocr-heads --help`` is fast and does not import torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ocr_heads import __version__
from ocr_heads.core.errors import EXIT_USER_ERROR


@dataclass(frozen=True)
class Command:
    """``module:function``, called as ``function(*leading, argv)``; ``same_as`` names its other spelling."""

    module: str
    function: str
    summary: str
    same_as: str
    leading: tuple[str, ...] = ()

    def load(self) -> Callable[..., int | None]:
        return getattr(importlib.import_module(self.module), self.function)


COMMANDS: dict[str, Command] = {
    "step1-passkey": Command("ocr_heads.pipeline.step1", "main", "render passkey samples as page images",
                             "step1_passkey.py", ("passkey",)),
    "step1-niah": Command("ocr_heads.pipeline.step1", "main", "render needle-in-a-haystack samples as page images",
                          "step1_niah.py", ("niah",)),
    "step2": Command("ocr_heads.pipeline.step2", "main", "OCR score of every head from step1 page images",
                     "step2_ocr_retrieval_head.py", ("image",)),
    "step2-text": Command("ocr_heads.pipeline.step2", "main", "retrieval score of every head from step1 text",
                          "step2_text_retrieval_head.py", ("text",)),
    "step3": Command("ocr_heads.pipeline.step3", "main", "extract OCR / retrieval heads from a score file",
                     "step3_extracted_heads.py"),
    "masking": Command("ocr_heads.pipeline.experiment", "masking_main", "answer quality with heads masked",
                       "exp_masking.py"),
    "sink": Command("ocr_heads.pipeline.experiment", "sink_main", "answer quality with sink attention moved",
                    "exp_sink.py"),
    "redirect": Command("ocr_heads.pipeline.redirect", "main", "point the OCR heads at another character",
                        "exp_redirect.py"),
    "validate": Command("ocr_heads.pipeline.validate", "main", "which score's top heads matter: causal gap vs random",
                        "exp_validate.py"),
    "case": Command("ocr_heads.pipeline.case_study", "main", "per-character OCR head scores (0-9a-z passkeys)",
                    "exp_case.py"),
    "report": Command("ocr_heads.report.__main__", "main", "figures, tables and a summary from score files",
                      "python -m ocr_heads.report"),
    "doctor": Command("ocr_heads.doctor", "main", "check that a model loads, reads a page and captures right",
                      "python -m ocr_heads.doctor"),
    "inspect": Command("ocr_heads.inspect", "main", "a page's image tokens and their boxes (no model weights)",
                       "python -m ocr_heads.inspect"),
    "look": Command("ocr_heads.look", "main", "where the model looks: every output token's attention on the page",
                    "python -m ocr_heads.look"),
    "viewer": Command("ocr_heads.maps.viewer", "main", "rewrite a look folder's self-contained HTML viewer",
                      "python -m ocr_heads.maps.viewer"),
    "smoke": Command("ocr_heads.smoke", "main", "full-size Qwen2-VL-2B architecture run, random weights",
                     "python -m ocr_heads.smoke"),
    "demo": Command("ocr_heads.demo", "main", "the whole pipeline offline on the toy model",
                    "python -m ocr_heads.demo"),
    "tiny": Command("ocr_heads.models.tiny.build", "main", "build a tiny checkpoint from a published config",
                    "python -m ocr_heads.models.tiny"),
    "hub-fixture": Command("ocr_heads.models.hub_fixture", "main", "build a hub-faithful fixture checkpoint",
                           "python -m ocr_heads.models.hub_fixture"),
    "convert-internvl2": Command("ocr_heads.models.internvl2_convert", "main",
                                 "convert an InternVL2 remote-code checkpoint",
                                 "python -m ocr_heads.models.internvl2_convert"),
    "convert-internlm2": Command("ocr_heads.models.internlm2_convert", "main",
                                 "convert an InternLM2 / InternLM2.5 chat remote-code checkpoint",
                                 "python -m ocr_heads.models.internlm2_convert"),
    "import-wu": Command("ocr_heads.scores.wu", "main", "import Wu et al.'s retrieval-head scores into a score file",
                         "python -m ocr_heads.scores.wu"),
    "toy-data": Command("ocr_heads.toy.data", "main", "generate the toy model's training data",
                        "python -m ocr_heads.toy.data"),
    "toy-train": Command("ocr_heads.toy.train", "main", "train the toy model on the CPU",
                         "python -m ocr_heads.toy.train"),
    "toy-evaluate": Command("ocr_heads.toy.evaluate", "main", "evaluate the toy model",
                            "python -m ocr_heads.toy.evaluate"),
}

PROG = "ocr-heads"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [args]", "",
             "Find, score and intervene on the OCR heads and retrieval heads of vision-language models.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    lines += ["", f"`{PROG} <command> --help` shows a command's own flags, inputs and outputs; each command is",
              "the same as its script (step2 = step2_ocr_retrieval_head.py, doctor = python -m ocr_heads.doctor)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run ``argv[0]``'s command with the rest of ``argv``; its exit status (None counts as 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else EXIT_USER_ERROR
    if argv[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    command = COMMANDS.get(name)
    if command is None:
        print(f"error: unknown command {name!r}; commands: {', '.join(COMMANDS)} (see {PROG} --help)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    function = command.load()
    # argparse names the program after sys.argv[0]: usage lines then read "ocr-heads step2 ...".
    saved = sys.argv[0]
    sys.argv[0] = f"{PROG} {name}"
    try:
        status = function(*command.leading, argv=rest)
    finally:
        sys.argv[0] = saved
    return 0 if status is None else status


if __name__ == "__main__":
    raise SystemExit(main())
