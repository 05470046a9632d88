"""The application layer: commands in, events out; the only layer that causes effects."""

from core.service.routing import RoutingService

__all__ = ["RoutingService"]
