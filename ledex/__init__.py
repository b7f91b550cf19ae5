"""ledex: explained, sandbox-verified fixes for failing tests from a small local LEDEX model."""

__version__ = "0.1.0"
