"""Errors the user can fix, and every exit code lrnbn uses. The CLI prints a UserError as one line and exits with
the code it carries."""

EXIT_OK = 0
EXIT_FAILED = 1  # an unexpected failure (status "failed", with the error); compare: some run failed
EXIT_BAD_INPUT = 2  # a config, argument, path or dataset to fix; nothing was written
EXIT_DIVERGED = 3  # a non-finite loss (status "diverged")
EXIT_BUSY = 75  # EX_TEMPFAIL: another process holds the run; try again later
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM stopped the run between two steps (128 + SIGINT)

# A run's final status in summary.json -> the exit code of the command that trained it.
STATUS_EXIT_CODES = {"completed": EXIT_OK, "diverged": EXIT_DIVERGED, "interrupted": EXIT_INTERRUPTED}


def exit_code_of(status: str) -> int:
    return STATUS_EXIT_CODES.get(status, EXIT_FAILED)


class UserError(Exception):
    """Bad input: a config, a path, a dataset. Printed as one line, exit code 2, nothing written."""

    exit_code = EXIT_BAD_INPUT
