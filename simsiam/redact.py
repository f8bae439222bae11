"""Credentials out of anything shown or logged: scheme://user:secret@host -> scheme://user:***@host."""

from __future__ import annotations

import re
from typing import Any

_USERINFO = re.compile(r"(//[^:/@\s]+:)[^@\s]*@")


def redact(value: Any) -> Any:
    """Strings with credentials in their URIs are masked; other values pass through."""
    return _USERINFO.sub(r"\1***@", value) if isinstance(value, str) else value
