"""The error a data file that cannot be used raises: one class, below every module that reads data, so the
readers (``govtopic.tables``, ``govtopic.data``, ``govtopic.corrections``) raise it without importing each other.

Example:
    >>> raise DataError("train.jsonl: row 12 has no text; give it a text or a title")
"""

from __future__ import annotations


class DataError(ValueError):
    """A data file that cannot be used as it is; the message names the file, row or column and the fix."""
