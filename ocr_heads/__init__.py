"""ocr-heads: find, score and intervene on the attention heads that LVLMs use to read text in images."""

__version__ = "0.1.0"
