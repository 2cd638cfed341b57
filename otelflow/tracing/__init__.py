"""Trace ids and the events → span tree builder."""
