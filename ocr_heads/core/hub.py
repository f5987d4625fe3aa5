"""Is the Hugging Face hub reachable? Asked once per process, so an offline machine fails fast.

Without network and without ``HF_HUB_OFFLINE``, huggingface_hub retries every request for most of a minute
before it gives up. One TCP connect to the hub's endpoint (``HF_ENDPOINT``) answers the question in at most a
few seconds; when it fails, :func:`go_offline` makes the rest of the process use the local cache only.
"""

from __future__ import annotations

import os
import socket
import sys
from functools import lru_cache
from urllib.parse import urlsplit

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 3.0
_TRUE = {"1", "on", "yes", "true"}


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def offline_by_choice() -> bool:
    """The user asked for no network (``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def reachable() -> bool:
    """One connect to the hub's host, no retries; False at once when ``HF_HUB_OFFLINE`` is set."""
    return why_unreachable() == ""


@lru_cache(maxsize=1)
def why_unreachable() -> str:
    """Why the hub cannot be reached ("" when it can), decided once per process."""
    if offline_by_choice():
        return "HF_HUB_OFFLINE is set"
    parts = urlsplit(endpoint())
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return ""
    except OSError as err:
        return f"no connection to {endpoint()}: {err.strerror or err}"


def go_offline() -> None:
    """From now on, this process reads the hub's cache only (no network requests, so no retries)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:  # already imported: it read the variable at import time
        constants.HF_HUB_OFFLINE = True
