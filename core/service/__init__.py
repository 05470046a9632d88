"""The application layer: commands in, events out; the only layer that causes effects.

The host reaches the store only through it (core/service/boot.py opens both), so the store's
errors that a service call may raise are named here too.
"""

from core.service.routing import RoutingService
from store.base import StoreError, StoreUnavailable

__all__ = ["RoutingService", "StoreError", "StoreUnavailable"]
