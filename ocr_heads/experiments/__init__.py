"""Downstream experiments: answer quality under an intervention on a head set (exp_masking, exp_sink).

    base.py      what an experiment declares (Experiment, Edit, Option)
    masking.py   EXPERIMENT: top-k / random heads masked
    sink.py      EXPERIMENT: top-k heads' sink probability redistributed (beta)
    registry.py  every module here that defines EXPERIMENT, by name
    run.py       one run (dataset x head set): resumable per-sample log, summary JSON, CSV rows
    data.py      --data sources and model inputs of the evaluation examples
    validate.py  exp_validate's sweep: every score's top-k vs random heads over a k grid, on shared runs
    causal_gap.py  the gap, its paired bootstrap interval, its area over k (pure arithmetic)
    scored_heads.py  the score files / head lists a sweep compares, checked to belong together

The command line every experiment shares, built from its declaration, is
:mod:`ocr_heads.pipeline.experiment`. Adding an intervention = one module defining ``EXPERIMENT`` + its
test (docs/extending.md).
"""
