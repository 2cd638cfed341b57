"""Event types, user-defined events, and the helpers that make them."""

from otelflow.events.model import *  # noqa: F403
from otelflow.events.model import __all__ as _model_all
from otelflow.events.registry import UserEvent, define_event, event_class, make_event

__all__ = [*_model_all, "UserEvent", "define_event", "event_class", "make_event"]
