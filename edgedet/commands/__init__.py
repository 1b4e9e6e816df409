"""Implementations of the CLI commands that are more than a call into one module."""
