"""Case study: per-character OCR head scores for single-character passkeys 0-9a-z. See --help."""

import sys

from ocr_heads.pipeline.case_study import main

if __name__ == "__main__":
    sys.exit(main())
