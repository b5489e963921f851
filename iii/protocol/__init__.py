"""The sans-I/O protocol core: wire messages, the JSON codec, frame builders and the client session.

Nothing in this package opens a socket, starts a task or reads a clock: callers hand it bytes and commands and
get back events and bytes. :mod:`iii.protocol.frames` builds every frame type in exactly one place, for the SDK
and the embedded engine alike.
"""
