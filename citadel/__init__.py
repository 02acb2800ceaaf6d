"""citadel: infrastructure as code for the CX Dev & Test AI cluster."""

__version__ = "0.1.0"
