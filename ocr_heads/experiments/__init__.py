"""Downstream experiments: answer quality under an intervention on a head set (exp_masking, exp_sink).

    base.py      what an experiment declares (Experiment, Edit, Option)
    masking.py   EXPERIMENT: top-k / random heads masked
    sink.py      EXPERIMENT: top-k heads' sink probability redistributed (beta)
    registry.py  every module here that defines EXPERIMENT, by name
    run.py       one run (dataset x head set): resumable per-sample log, summary JSON, CSV rows
    cli.py       the command line every experiment shares, built from its declaration
    data.py      --data sources and model inputs of the evaluation examples

Adding an intervention = one module defining ``EXPERIMENT`` + its test (docs/extending.md).
"""

from ocr_heads.experiments.base import CSV_COLUMNS, Edit, Experiment, Option
from ocr_heads.experiments.cli import build_parser, default_heads_path, masking_main, run_main, sink_main
from ocr_heads.experiments.data import example_inputs, resolve_sources
from ocr_heads.experiments.registry import all_experiments, get_experiment
from ocr_heads.experiments.run import RunConfig, intervention, run_one
from ocr_heads.selection import choose_heads as select_heads
from ocr_heads.selection import load_head_ranking

__all__ = ["CSV_COLUMNS", "Edit", "Experiment", "Option", "RunConfig", "all_experiments", "build_parser",
           "default_heads_path", "example_inputs", "get_experiment", "intervention", "load_head_ranking",
           "masking_main", "resolve_sources", "run_main", "run_one", "select_heads", "sink_main"]
