"""The registered head scores: every module here defines ``SCORE`` (a :class:`~ocr_heads.scores.base.HeadScore`)
and is found by name through :func:`ocr_heads.scores.all_scores`. Adding a score = one module here.
"""
