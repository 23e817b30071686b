"""Errors the user can fix. The CLI prints them as one line and exits with the code they carry."""


class UserError(Exception):
    """Bad input: a config, a path, a dataset. Printed as one line, exit code 2, nothing written."""

    exit_code = 2
