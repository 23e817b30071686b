"""Errors the user can fix, and every exit code lrnbn uses. The CLI prints a UserError as one line and exits with
the code it carries."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # an unexpected failure (status "failed", with the error); compare: some run failed
EXIT_BAD_INPUT = 2  # a config, argument, path or dataset to fix; nothing was written
EXIT_DIVERGED = 3  # a non-finite loss (status "diverged")
EXIT_WRITE_FAILED = 74  # EX_IOERR: the machine refused a write (disk full, quota, I/O error, read-only); nothing lost
EXIT_BUSY = 75  # EX_TEMPFAIL: another process holds the run; try again later
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM stopped the run between two steps (128 + SIGINT)

# A run's final status in summary.json -> the exit code of the command that trained it.
STATUS_EXIT_CODES = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}


def exit_code_of(status: str) -> int:
    return STATUS_EXIT_CODES.get(status, EXIT_FAILED)


class UserError(Exception):
    """Bad input: a config, a path, a dataset. Printed as one line, exit code 2, nothing written."""

    exit_code = EXIT_BAD_INPUT


# What to do about a refused write, by its errno; any other cause (EIO, ...) gets CHECK_THE_DISK.
WRITE_REMEDIES = {
    errno.ENOSPC: "free space",
    errno.EDQUOT: "free space (or raise the quota)",
    errno.EROFS: "make it writable",
    errno.EACCES: "fix its permissions",
    errno.EPERM: "fix its permissions",
}
CHECK_THE_DISK = "check the disk and the path"
AGAIN = "run the command again"


class WriteFailed(UserError):
    """One of lrnbn's writes failed for a reason outside lrnbn (see `writing`): what was written before it stays."""

    exit_code = EXIT_WRITE_FAILED

    def __init__(self, path: Path, cause: OSError, then: str = AGAIN):
        self.path, self.cause, self.then = path, cause, then
        remedy = WRITE_REMEDIES.get(cause.errno, CHECK_THE_DISK)
        super().__init__(f"cannot write {path}: {cause.strerror or cause}; {remedy}, then {then}")

    def then_do(self, then: str) -> WriteFailed:
        """The same failure with another next step (a run in progress: resume it)."""
        return WriteFailed(self.path, self.cause, then)


@contextmanager
def writing(path: Path):
    """The one place where an OSError on one of lrnbn's writes becomes a WriteFailed naming `path` (not the temp file
    the OS may name), so that a full disk ends in one line and exit 74 instead of a traceback."""
    try:
        yield
    except OSError as exc:
        raise WriteFailed(path, exc) from None
