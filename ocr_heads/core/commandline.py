"""Command-line conventions shared by every script of the project.

- Every long flag accepts both spellings (``--model_id`` and ``--model-id``): the authors' scripts use
  snake_case, the newer flags kebab-case, and a user should not have to remember which is which.
- A user mistake, or a fault the user can fix (read-only or full disk, hub unreachable), ends with one
  ``error: ...`` line on stderr and exit status 2, never a traceback (``Parser.error`` for argparse,
  ``run_cli`` for errors found while running); Ctrl-C ends with one line and status 130.
- ``--n`` is an integer >= 1 everywhere and its help says what N counts (``count_help``).
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence

from ocr_heads.core.errors import EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_USER_ERROR, USER_ERRORS, IncompleteRunError
from ocr_heads.core.io import release_output_locks

SPELLING_NOTE = "Every flag also accepts its other spelling (--model_id or --model-id)."


def other_spelling(flag: str) -> str | None:
    """``--model_id`` <-> ``--model-id``; None for short flags and single words."""
    if not flag.startswith("--"):
        return None
    body = flag[2:]
    if "_" in body:
        return "--" + body.replace("_", "-")
    if "-" in body:
        return "--" + body.replace("-", "_")
    return None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def count_help(unit: str, default: object | None) -> str:
    """The one wording of ``--n`` in every script: what N counts, and its default."""
    tail = "all of them" if default is None else str(default)
    return f"N, the number of samples to use: N {unit} (an integer >= 1; default {tail})"


class Parser(argparse.ArgumentParser):
    """ArgumentParser with both flag spellings and one-line ``error:`` messages (exit 2)."""

    def __init__(self, *args, **kwargs) -> None:
        epilog = kwargs.get("epilog")
        kwargs["epilog"] = f"{epilog}\n{SPELLING_NOTE}" if epilog else SPELLING_NOTE
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args([self._canonical(token) for token in argv], namespace)

    def _canonical(self, token: str) -> str:
        if not token.startswith("--") or token == "--":
            return token
        flag, sep, value = token.partition("=")
        if flag in self._option_string_actions:
            return token
        other = other_spelling(flag)
        if other is not None and other in self._option_string_actions:
            return other + sep + value
        return token

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} --help)\n")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


# What to do about the faults of writing that a user can fix (the rest print the system's own words).
_OS_HINTS = {
    errno.EROFS: "the file system is read-only: choose a writable --out",
    errno.ENOSPC: "the disk is full: free space or choose another --out",
    errno.EDQUOT: "the disk quota is exhausted: free space or choose another --out",
}


def error_line(err: BaseException) -> str:
    # FileNotFoundError from open() reads "[Errno 2] No such file or directory: 'x'": keep what matters.
    if isinstance(err, OSError) and err.strerror:
        hint = _OS_HINTS.get(err.errno)
        where = f"{err.filename}: " if err.filename is not None else ""
        return f"error: {where}{err.strerror}" + (f" ({hint})" if hint else "")
    return f"error: {err}"


def interrupted_line(samples: int) -> str:
    return f"interrupted after {samples} samples; rerun the same command to resume"


def run_cli(main: Callable[..., int | None], *args: object) -> int:
    """Run a command's ``main``; a user mistake or a fault of the machine (read-only or full disk, no network)
    becomes one ``error:`` line and exit 2 (3 for runs that wrote incomplete results), Ctrl-C one line and 130."""
    try:
        status = main(*args)
    except IncompleteRunError as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_INCOMPLETE
    except (*USER_ERRORS, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        # Every finished sample is already logged: nothing is lost, so no traceback either.
        print(interrupted_line(getattr(err, "samples", 0)), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        release_output_locks()
    return int(status or 0)
