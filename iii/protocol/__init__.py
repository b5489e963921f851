"""The sans-I/O protocol core: messages (:mod:`.messages`), the JSON codec (:mod:`.codec`), frame builders
(:mod:`.frames`) and the two session state machines, the worker's (:mod:`.client`) and the engine's per-worker
one (:mod:`.worker_session`).

Nothing in this package opens a socket, starts a task or reads a clock: callers hand it bytes and commands and
get back events and bytes. :mod:`iii.protocol.frames` builds every frame type in exactly one place, for the SDK
and the embedded engine alike.
"""
