"""The errors a user can cause and the exit statuses they map to (see :func:`~ocr_heads.core.commandline.run_cli`)."""

from __future__ import annotations

EXIT_USER_ERROR = 2
# The run wrote its files, but they are incomplete: some samples failed, or no answer token was scored.
EXIT_INCOMPLETE = 3
EXIT_EMPTY_RUN = EXIT_INCOMPLETE
EXIT_INTERRUPTED = 130  # the shell's status for a process ended by SIGINT (128 + 2)


class UserError(Exception):
    """A mistake the user can fix (bad input, conflicting output); printed as one ``error:`` line."""


class IncompleteRunError(UserError):
    """The run wrote what it scored, but not everything it was asked to score (exit status 3)."""


class EmptyRunError(IncompleteRunError):
    """The run finished but produced nothing to score; its files are written for inspection."""


class FailedSamplesError(IncompleteRunError):
    """Some samples failed (each logged with its error); the files hold the samples that were scored."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a resumable loop: what finished is logged, a rerun of the same command resumes."""

    def __init__(self, samples: int) -> None:
        super().__init__(samples)
        self.samples = samples


class OutputBusy(UserError):
    """Another process is writing the same output (its lock is held)."""


# Errors that stem from what the user gave (paths, file contents, flag values), not from a bug.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                                PermissionError, ValueError)
