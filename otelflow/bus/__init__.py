"""The event bus (bounded queue), its dispatcher thread, and user subscribers."""
