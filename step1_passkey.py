"""Step 1 (passkey): render haystack pages with a pass-key needle and the box of every key character."""

import sys

from ocr_heads.pipeline.step1 import main

if __name__ == "__main__":
    sys.exit(main("passkey"))
