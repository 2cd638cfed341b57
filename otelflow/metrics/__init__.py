"""Metric names and units, running aggregates, and their bridge to OTel readers."""
