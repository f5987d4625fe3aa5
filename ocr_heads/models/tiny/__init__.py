"""Tiny checkpoints of every family, built offline from published configs with only sizes shrunk, for the
tests and the demo (``python -m ocr_heads.models.tiny --help``).

    build.py        the builders' registry, the Qwen2-VL and InternVL builders, and the command
    qwen.py, llava_onevision.py, gemma3.py, smolvlm.py   one builder per family, registered by name
    text_lm.py      the text-only base LLMs (qwen2, internlm2): no pages, step2 text only
    hub_configs.py  read a published config, shrink its sizes, save a random model
    charset.py, qwen2_vocab.py   the tokenizers the tiny models use (characters; the real Qwen2 BPE)
"""
