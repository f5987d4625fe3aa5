"""The report's sections, one builder each; :func:`ocr_heads.report.build.build_report` composes them.

    common.py        Section (a heading and its HTML parts) and Report (what the builders add to)
    files.py         per score file: selections, numbers, summary lines (shared by the sections below)
    score_maps.py    heatmaps and top-10 tables                sparsity.py      heads above threshold
    distinctness.py  overlap and rank correlation of file pairs activation.py    frequency vs mean score
    experiments.py   one result table per registered experiment case_study.py    per-character head maps
    layers.py        selected heads per layer (the architectural distribution)
    validation.py    exp_validate: causal gap per score and k, drop figure, score similarity
"""
