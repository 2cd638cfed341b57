"""Where telemetry goes: the JSONL run directory, OTLP, Prometheus, the console."""
