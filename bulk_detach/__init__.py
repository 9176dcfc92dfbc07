"""bulk-detach: detach SIP gateways from many VideoSDK phone numbers at once."""

from bulk_detach.errors import BulkDetachError, CredentialsError, InputError, ResultsFileError
from bulk_detach.models import RESULT_COLUMNS, Answer, ExitStatus, Outcome, OutcomeKind, Record

__all__ = [
    "RESULT_COLUMNS",
    "Answer",
    "BulkDetachError",
    "CredentialsError",
    "ExitStatus",
    "InputError",
    "Outcome",
    "OutcomeKind",
    "Record",
    "ResultsFileError",
]
__version__ = "0.1.0"
