"""The local stand-in for the VideoSDK detach API (``bulk-detach sandbox``)."""

from bulk_detach.sandbox.server import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET,
    Faults,
    LoggedRequest,
    PhoneNumber,
    Sandbox,
    SandboxThread,
    generate_inventory,
    generated_number,
    load_inventory,
    write_inventory,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET",
    "Faults",
    "LoggedRequest",
    "PhoneNumber",
    "Sandbox",
    "SandboxThread",
    "generate_inventory",
    "generated_number",
    "load_inventory",
    "write_inventory",
]
