"""Reading an image file as RGB, with a decoding failure as one ValueError the command line prints."""

from __future__ import annotations

import io
import os

from PIL import Image, UnidentifiedImageError


def open_rgb(source: str | os.PathLike | io.BytesIO, failure: str) -> Image.Image:
    """The image at ``source`` as RGB; a file PIL cannot decode raises ``ValueError("<failure>: <why>")``."""
    try:
        with Image.open(source) as image:
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{failure}: {err}") from err
