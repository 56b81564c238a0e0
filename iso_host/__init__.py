"""iso-host: an ISO 8583 acquirer host emulator for testing POS terminals."""

__version__ = "0.1.0"
