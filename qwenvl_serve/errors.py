"""The one exception type the CLI turns into a message and an exit status."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; ``str(error)`` is shown as is, without a traceback."""

    exit_code = 1
    prefix = ""

    def user_message(self) -> str:
        """The line printed after ``qwenvl-serve: ``."""
        return f"{self.prefix}{self}"
