"""User-facing errors: one clear line, exit status 2 from every CLI."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a file, a field, a flag).

    The message is a single line that names what is wrong and how to fix it. CLIs built
    with :func:`compkit_utils.config.run_cli` print it as ``error: <message>`` on stderr
    and exit with status 2.
    """
