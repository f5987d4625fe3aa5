"""Sink experiment: answer quality when the top-k OCR heads move attention off the sink (beta). See --help."""

import sys

from ocr_heads.pipeline.experiment import sink_main

if __name__ == "__main__":
    sys.exit(sink_main())
