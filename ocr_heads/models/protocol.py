"""How pages are turned into image tokens: the paper's settings or the checkpoint's own.

``paper`` (the default) is what the authors' code passes (baekingeol/OCR_Head): Qwen2-VL pages are
resized with ``min_pixels = max_pixels = 256*28*28`` (about 256 tokens a page, small pages upscaled;
``utils/loader.py``), InternVL2 pages become one 448 px tile without thumbnail (``max_num=1`` in
``step2_ocr_retrieval_head.py``). ``native`` keeps whatever the checkpoint's preprocessor config says.
Each family resolves the names into its own processor settings; explicit values override either.

A checkpoint may declare the protocol it was trained for (``"ocr_heads_protocol": "native"`` in its
config.json, as the toy trainer writes): a model trained on pages at its own resolution misreads
pages the paper protocol rescales, so its declaration is used whenever ``--protocol`` is not given.
"""

from __future__ import annotations

PAPER = "paper"
NATIVE = "native"
PROTOCOLS = (PAPER, NATIVE)
DEFAULT_PROTOCOL = PAPER
# The config.json key a checkpoint declares its protocol with.
DECLARED_KEY = "ocr_heads_protocol"


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    return protocol


def resolve_protocol(given: str | None, config: object) -> tuple[str, str]:
    """The protocol to load with and where it came from: ``given`` (``--protocol``), else the one the checkpoint's
    ``config`` declares (:data:`DECLARED_KEY`), else :data:`DEFAULT_PROTOCOL`."""
    if given is not None:
        return check_protocol(given), "given"
    declared = getattr(config, DECLARED_KEY, None)
    if declared is None:
        return DEFAULT_PROTOCOL, "the default: the checkpoint declares none"
    if declared not in PROTOCOLS:
        raise ValueError(f"config.json declares {DECLARED_KEY} {declared!r}: not a protocol "
                         f"(choose from {', '.join(PROTOCOLS)})")
    return declared, f"declared by the checkpoint: config.json {DECLARED_KEY}"
