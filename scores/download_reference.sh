#!/usr/bin/env bash
# Fetch the authors' released score files (baekingeol/OCR_Head) into scores/reference/ (git-ignored).
# Needs a connected machine; not run in CI. Pinned to the commit whose files we checked, with their sha256.
#   bash scores/download_reference.sh
#   python -m ocr_heads.report --scores scores/reference/*.json --out reports/reference
set -euo pipefail
cd "$(dirname "$0")"
COMMIT=25471315a89648210598f46953b745e549fa8a37
BASE="https://raw.githubusercontent.com/baekingeol/OCR_Head/${COMMIT}"
mkdir -p reference
fetch() {  # repo path, expected sha256
    local name
    name=$(basename "$1")
    curl -fsSL --retry 3 -o "reference/${name}.part" "${BASE}/$1"
    echo "$2  reference/${name}.part" | sha256sum -c --quiet -
    mv "reference/${name}.part" "reference/${name}"
    echo "scores/reference/${name}"
}
fetch retrieval_score/image/InternVL2-8B_fg_2.json 9d9a9bab2f4f77edfb97c8420d7cdf549621d9e45a8607da7d78208da1a104c5
fetch retrieval_score/text/Qwen2-VL-2B-Instruct_te_2.json 41bf7c1b3c6e503b1c958523942f920c7e180032d19c8bd17a3b33bec5c8891c
