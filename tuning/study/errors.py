"""The tuning library's errors for users' mistakes, apart from bugs.

``UsageError`` is what a user can fix: a flag's value, a file, a study that cannot be used as
asked; its message says how. The tools print it as one line with exit status 2. Anything else
a tool meets (a ``ValueError`` from a slip in the code, say) is a bug and keeps its traceback.
"""

from __future__ import annotations


class UsageError(Exception):
    """A user's mistake: bad input that the message says how to fix."""


class StudyError(UsageError):
    """A study or its storage cannot be used as asked; the message says what to do instead."""
