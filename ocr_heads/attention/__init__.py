"""Attention: the one registered attention function and everything that reads or edits attention rows.

    forward.py        the function registered with transformers' AttentionInterface; capture/edit scopes
    recorder.py       what capture records of one generate (producing rows' argmax and sink, probes' values)
    probes.py         statistics beyond that, one probe class each (prompt-row argmax, prefill key mass,
                      image attention maps)
    probabilities.py  probabilities of chosen rows and heads recomputed from one attention call (one GQA rule)
    eager.py          the reference: eager attention, and the check of recorded argmax against it
    edits.py          interventions plugged into the forward: head masking, sink redistribution
"""

from ocr_heads.attention.eager import TIE_TOLERANCE, eager_attention_rows, verify_against_eager
from ocr_heads.attention.forward import (
    IMPLEMENTATION,
    AttentionEdit,
    AttentionHooks,
    capture,
    check_supported,
    edited,
    model_hooks,
    ocr_heads_attention_forward,
    producing_row_statistics,
    row_statistics,
    text_attention,
)
from ocr_heads.attention.probes import AttentionCall, Probe, ProbeRecord
from ocr_heads.attention.recorder import NOT_RECORDED, AttentionRecorder, StepRecord

__all__ = ["IMPLEMENTATION", "NOT_RECORDED", "TIE_TOLERANCE", "AttentionCall", "AttentionEdit", "AttentionHooks",
           "AttentionRecorder", "Probe", "ProbeRecord", "StepRecord", "capture", "check_supported",
           "eager_attention_rows", "edited", "model_hooks", "ocr_heads_attention_forward", "producing_row_statistics",
           "row_statistics", "text_attention", "verify_against_eager"]
