"""Step 2 (text): retrieval score of every decoder head from step1 contexts as plain text. See --help."""

import sys

from ocr_heads.pipeline.step2 import main

if __name__ == "__main__":
    sys.exit(main("text"))
