"""Validation: which score's top heads matter, each score's top-k heads edited against k random heads. See --help."""

import sys

from ocr_heads.pipeline.validate import main

if __name__ == "__main__":
    sys.exit(main())
