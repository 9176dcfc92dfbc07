"""The values that flow through a run: records in, outcomes out.

Standard library only, so every other module can import it cheaply.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@enum.unique
class OutcomeKind(str, enum.Enum):
    """What happened to one input row; the words are the results file's."""

    DETACHED = "detached"
    NOT_ATTACHED = "not_attached"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    DUPLICATE = "duplicate"
    FAILED = "failed"
    SKIPPED = "skipped"
    PENDING = "pending"

    @property
    def is_final(self) -> bool:
        """A final outcome is kept by ``--resume``; the others are redone."""
        return self not in _REDO


_REDO = frozenset({OutcomeKind.FAILED, OutcomeKind.SKIPPED, OutcomeKind.PENDING})


@enum.unique
class ExitStatus(enum.IntEnum):
    OK = 0
    INCOMPLETE = 1  # some rows failed or skipped: --resume redoes them
    NOTHING_SENT = 2  # usage, input, credentials or results-file problem
    SAFETY_STOP = 3  # credentials rejected, or --max-failures reached

    @staticmethod
    def for_signal(signum: int) -> int:
        return 128 + signum


@enum.unique
class StopReason(str, enum.Enum):
    AUTH_REJECTED = "credentials rejected"
    MAX_FAILURES = "--max-failures reached"
    SIGNAL = "signal"


RESULT_COLUMNS: tuple[str, ...] = (
    "row",
    "input",
    "phone_number",
    "outcome",
    "http_status",
    "inbound_gateway_id",
    "outbound_gateway_id",
    "phone_number_id",
    "attempts",
    "uncertain",
    "message",
    "finished_at",
    "request_id",
)


@dataclass(frozen=True, slots=True)
class Record:
    """One input data row after normalisation.

    ``outcome`` is set when the row is settled without the API (``invalid``,
    ``duplicate``); otherwise the number in ``phone_number`` is to be sent.
    """

    row: int
    input: str
    phone_number: str = ""
    outcome: OutcomeKind | None = None
    message: str = ""

    @property
    def sendable(self) -> bool:
        return self.outcome is None


@dataclass(frozen=True, slots=True)
class Answer:
    """What the API's answers for one number came to."""

    kind: OutcomeKind
    attempts: int = 0
    http_status: int | None = None
    inbound_gateway_id: str = ""
    outbound_gateway_id: str = ""
    phone_number_id: str = ""
    uncertain: bool = False
    message: str = ""
    request_id: str = ""
    auth_rejected: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """One results-file row: a record and what became of it."""

    record: Record
    answer: Answer
    finished_at: str

    @property
    def kind(self) -> OutcomeKind:
        return self.answer.kind
