"""Log lines for the operator: console or JSON lines, secrets always redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"
# Any JWT, ours or one a server echoed back, is a credential.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


class Redactor:
    """Replaces known secrets and anything shaped like a JWT in text."""

    __slots__ = ("_secrets",)

    def __init__(self, *secrets: str) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        # Very short strings would redact ordinary words; real secrets are long.
        self._secrets.extend(s for s in secrets if len(s) >= 6 and s not in self._secrets)
        self._secrets.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _JWT.sub(REDACTED, text) if "eyJ" in text else text

    def processor(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = self(value)
            elif not isinstance(value, (int, float, bool)) and value is not None:
                event[key] = self(str(value))
        return event


def _drop_unset(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Fields with nothing to say (None) stay out of the line."""
    for key in [k for k, v in event.items() if v is None]:
        del event[key]
    return event


def configure(fmt: str, stream: TextIO | None, redactor: Redactor) -> None:
    """``fmt`` is auto (console on a terminal), console, or json."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty(), pad_event_to=0)
    structlog.configure(
        processors=[
            _drop_unset,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # Tracebacks become text first, so the redactor sees them too.
            structlog.processors.format_exc_info,
            redactor.processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
