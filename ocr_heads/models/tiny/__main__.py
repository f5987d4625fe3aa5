"""``python -m ocr_heads.models.tiny``: build a tiny checkpoint (see :mod:`ocr_heads.models.tiny.build`)."""

from ocr_heads.models.tiny.build import main

raise SystemExit(main())
