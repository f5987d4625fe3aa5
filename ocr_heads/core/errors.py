"""The errors a user can cause and the exit statuses they map to (see :func:`~ocr_heads.core.commandline.run_cli`)."""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_EMPTY_RUN = 3


class UserError(Exception):
    """A mistake the user can fix (bad input, conflicting output); printed as one ``error:`` line."""


class EmptyRunError(UserError):
    """The run finished but produced nothing to score; its files are written for inspection."""


# Errors that stem from what the user gave (paths, file contents, flag values), not from a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                PermissionError, ValueError)
