"""The two kinds of failure the CLI reports without a traceback.

UserError: the user's input is wrong (exit 2). Its message is one line naming the file, the key and the fix.
RuntimeFailure: something outside the input failed (a scheduler refused, a disk is full) (exit 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class UserError(Exception):
    exit_code = 2

    def __init__(self, message: str, file: Optional[Union[str, Path]] = None, key: Optional[str] = None,
                 fix: Optional[str] = None):
        parts = []
        if file is not None:
            parts.append(str(file))
        if key:
            parts.append(f"key '{key}'")
        head = ": ".join(parts)
        text = f"{head}: {message}" if head else message
        if fix:
            text += f" (fix: {fix})"
        # One line, always: a newline in a value must not split the message.
        super().__init__(one_line(text))


def one_line(text: str) -> str:
    """The message as one printable line: newlines become spaces; other control and line-separator characters a
    hostile value may carry (\\r, NUL, U+2028...) are shown escaped, so a terminal shows exactly one line."""
    text = " ".join(str(text).split("\n"))
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class RuntimeFailure(Exception):
    exit_code = 1
