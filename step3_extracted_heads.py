"""Step 3: extract OCR / retrieval heads from a score file (ranked head list JSON). See --help."""

from ocr_heads.pipeline.step3 import main

if __name__ == "__main__":
    raise SystemExit(main())
