#!/usr/bin/env bash
# Fetch the raw evaluation datasets into dataset/ (git-ignored) on a connected machine.
# The tasks in ocr_heads/tasks/ find these copies by default, so runs afterwards need no network:
#   dataset/DocVQA/DocVQA/validation-*.parquet        doc     (lmms-lab/DocVQA, config DocVQA)
#   dataset/MP-DocVQA/data/val-*.parquet              mdocs   (lmms-lab/MP-DocVQA, split val)
#   dataset/nq/biencoder-nq-dev.json                  nq      (DPR NQ dev)
#   dataset/hotpotqa/hotpot_dev_distractor_v1.json    hotpot  (HotpotQA dev, distractor setting)
#   dataset/SlideVQA/annotations/qa/dev.jsonl         slide   (SlideVQA dev; images/dev/<deck_name>/ beside it)
# Usage: bash dataset/download.sh [doc] [mdocs] [nq] [hotpot] [slide]   (default: all). Reruns skip finished files.
# Not run in CI. Needs curl, gzip and the Hugging Face CLI (`hf`, or `huggingface-cli` on older hubs).
set -euo pipefail
cd "$(dirname "$0")"

NQ_URL="https://dl.fbaipublicfiles.com/dpr/data/retriever/biencoder-nq-dev.json.gz"
HOTPOT_URL="http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json"
SLIDEVQA_REPO="https://github.com/nttmdlab-nlp/SlideVQA"

log() { echo "[download] $*" >&2; }

hf_cli() {
    if command -v hf >/dev/null 2>&1; then
        hf download "$@"
    elif command -v huggingface-cli >/dev/null 2>&1; then
        huggingface-cli download "$@"
    else
        log "neither 'hf' nor 'huggingface-cli' found: pip install -U huggingface_hub"
        exit 1
    fi
}

# hf_snapshot REPO DEST PATTERN: the files of one config/split, checked to exist afterwards.
hf_snapshot() {
    local repo=$1 dest=$2 pattern=$3
    log "$repo ($pattern) -> dataset/$dest"
    hf_cli "$repo" --repo-type dataset --include "$pattern" --local-dir "$dest"
    if ! compgen -G "$dest/$pattern" >/dev/null; then
        log "no files matched $pattern in $repo; the repo layout may have changed:"
        log "  rerun without --include, the loader picks the config folder and split files itself"
        exit 1
    fi
}

# fetch URL DEST: download to a temp file (gunzip .gz) and rename, so a broken transfer leaves nothing.
fetch() {
    local url=$1 dest=$2
    if [[ -s $dest ]]; then
        log "$dest exists, skipping"
        return
    fi
    mkdir -p "$(dirname "$dest")"
    log "$url -> dataset/$dest"
    if [[ $url == *.gz ]]; then
        curl -fL --retry 3 "$url" | gzip -dc >"$dest.part"
    else
        curl -fL --retry 3 -o "$dest.part" "$url"
    fi
    mv "$dest.part" "$dest"
}

# slide: SlideVQA's annotations come from its repository; its slide images are fetched by the release's own
# instructions (its README), into dataset/SlideVQA/images/dev/<deck_name>/<file name of each image URL>. Questions whose images are missing are
# skipped with a count; `--data slide=PATH` points at another copy laid out the same way.
slidevqa() {
    local dest=SlideVQA/annotations/qa/dev.jsonl
    if [[ ! -s $dest ]]; then
        mkdir -p SlideVQA/annotations/qa
        fetch "https://raw.githubusercontent.com/nttmdlab-nlp/SlideVQA/main/annotations/qa/dev.jsonl" "$dest"
    fi
    if ! compgen -G "SlideVQA/images/dev/*" >/dev/null; then
        log "SlideVQA images are not here: follow $SLIDEVQA_REPO (its README) to put the dev"
        log "  slides under dataset/SlideVQA/images/dev/<deck_name>/; then rerun with --datasets slide"
    fi
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(doc mdocs nq hotpot slide)
for target in "${targets[@]}"; do
    case $target in
        doc) hf_snapshot lmms-lab/DocVQA DocVQA "DocVQA/validation-*" ;;
        mdocs) hf_snapshot lmms-lab/MP-DocVQA MP-DocVQA "data/val-*" ;;
        nq) fetch "$NQ_URL" nq/biencoder-nq-dev.json ;;
        hotpot) fetch "$HOTPOT_URL" hotpotqa/hotpot_dev_distractor_v1.json ;;
        slide) slidevqa ;;
        *) log "unknown target '$target' (choose from: doc mdocs nq hotpot slide)"; exit 2 ;;
    esac
done
log "done"
