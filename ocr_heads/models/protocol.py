"""How pages are turned into image tokens: the paper's settings or the checkpoint's own.

``paper`` (the default) is what the authors' code passes (baekingeol/OCR_Head): Qwen2-VL pages are
resized with ``min_pixels = max_pixels = 256*28*28`` (about 256 tokens a page, small pages upscaled;
``utils/loader.py``), InternVL2 pages become one 448 px tile without thumbnail (``max_num=1`` in
``step2_ocr_retrieval_head.py``). ``native`` keeps whatever the checkpoint's preprocessor config says.
Each family resolves the names into its own processor settings; explicit values override either.
"""

from __future__ import annotations

PAPER = "paper"
NATIVE = "native"
PROTOCOLS = (PAPER, NATIVE)
DEFAULT_PROTOCOL = PAPER


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    return protocol
