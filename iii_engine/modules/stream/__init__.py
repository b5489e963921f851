"""The stream module: ``module`` (wiring), ``settings``, ``api`` (the ``stream::*`` functions), ``socket`` (the
client stream socket), ``triggers``, ``store`` (choosing the backend; shared with the state module), ``inputs``
and ``locks``."""

from .module import StreamModule

__all__ = ["StreamModule"]
