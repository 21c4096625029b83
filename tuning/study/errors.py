"""The tuning library's domain error."""

from __future__ import annotations


class StudyError(Exception):
    """A study or its storage cannot be used as asked; the message says what to do instead."""
