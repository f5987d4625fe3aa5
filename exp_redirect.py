"""Redirect experiment: point the top-k OCR heads from one passkey character to another and count how often the
answer follows (against random heads and a blank region). See --help."""

import sys

from ocr_heads.pipeline.redirect import main

if __name__ == "__main__":
    sys.exit(main())
