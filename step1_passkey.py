"""Step 1 (passkey): render haystack pages with a pass-key needle and the box of every key character."""

from ocr_heads.data.step1 import build_parser, run

if __name__ == "__main__":
    parser = build_parser("passkey", "Generate passkey-retrieval samples rendered as page images.")
    run("passkey", parser.parse_args())
