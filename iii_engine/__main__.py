"""``python -m iii_engine`` = ``iii-engine``."""


def main() -> int:
    """Entry point of the ``iii-engine`` console script (:func:`iii_engine.cli.main`): a Ctrl-C before the engine
    handles it, during the imports included, dies of SIGINT (status 130 in a shell) and no traceback."""
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:
        return _interrupted()
    except RuntimeError as exc:
        # CPython wraps a Ctrl-C landing in a class body's __set_name__ (functools.cached_property, during the
        # imports: ipaddress) in "RuntimeError: Error calling __set_name__", the interrupt as its cause
        if _caused_by_interrupt(exc):
            return _interrupted()
        raise


def _caused_by_interrupt(exc: BaseException) -> bool:
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _interrupted() -> int:
    """End the process as an uncaught KeyboardInterrupt does, by SIGINT itself: a shell running the command in a loop
    stops the loop for a death by SIGINT, not for an exit status of 130 (its ``$?`` is 130 either way)."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    return 130  # where the signal did not end the process


if __name__ == "__main__":
    raise SystemExit(main())
