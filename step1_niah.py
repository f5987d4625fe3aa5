"""Step 1 (NIAH): render haystack pages with a question-answer needle and the box of every answer character."""

from ocr_heads.data.step1 import build_parser, run

if __name__ == "__main__":
    parser = build_parser("niah", "Generate needle-in-a-haystack samples rendered as page images.")
    run("niah", parser.parse_args())
