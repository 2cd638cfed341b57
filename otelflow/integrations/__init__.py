"""Integrations with execution engines and libraries (optional imports inside)."""
