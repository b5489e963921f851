"""Engines linked to engines: ``link`` (a reconnecting worker connection to a remote engine), ``client`` (the
bridge client module), ``queue`` and ``stores`` (the queue, state and stream modules' ``Bridge`` adapters)."""

from .client import BridgeClientModule

__all__ = ["BridgeClientModule"]
