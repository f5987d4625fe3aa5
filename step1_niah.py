"""Step 1 (NIAH): render haystack pages with a question-answer needle and the box of every answer character."""

import sys

from ocr_heads.pipeline.step1 import main

if __name__ == "__main__":
    sys.exit(main("niah"))
