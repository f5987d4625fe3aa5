"""The analysis report: figures and tables from score JSONs (and result CSVs) alone.

``python -m ocr_heads.report --scores FILE [FILE ...] --out DIR`` or :func:`build_report` from a notebook.
"""

from ocr_heads.report.build import ReportResult, build_report, load_case

__all__ = ["ReportResult", "build_report", "load_case"]
