"""The error family: every failure a user can cause is a :class:`JinaRagError` whose message says what to do.

Each subclass also keeps a builtin base (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so code
catching those keeps working; ``except JinaRagError`` catches them all.
"""

from __future__ import annotations


class JinaRagError(Exception):
    """Base of jina_rag's errors: one line saying what went wrong and what to do."""


class InvalidInputError(JinaRagError, ValueError):
    """A text, setting or location that cannot work as given."""


class InvalidTypeError(InvalidInputError, TypeError):
    """An argument of the wrong type (a ``TypeError`` too, as Python's own checks raise)."""


def check_unicode(text: str, where: str) -> None:
    """Refuse a lone surrogate (``"\\ud800"``): not Unicode text, and tokenizers fail on it with a TypeError."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(
            f"{where} holds a lone surrogate ({text[error.start]!r} at character {error.start}), which is not "
            f"Unicode text: remove it, or decode the source with errors='replace'"
        ) from None
