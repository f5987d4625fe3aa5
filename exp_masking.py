"""Masking experiment: answer quality with the top-k OCR/retrieval heads (or k random heads) masked. See --help."""

import sys

from ocr_heads.pipeline.experiment import masking_main

if __name__ == "__main__":
    sys.exit(masking_main())
