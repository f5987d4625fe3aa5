"""Step 2 (image): OCR score of every decoder head from step1 page images. See --help."""

import sys

from ocr_heads.pipeline.step2 import main

if __name__ == "__main__":
    sys.exit(main("image"))
