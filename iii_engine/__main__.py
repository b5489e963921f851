"""``python -m iii_engine`` = ``iii-engine``."""


def main() -> int:
    """Entry point of the ``iii-engine`` console script (:func:`iii_engine.cli.main`): a Ctrl-C before the engine
    handles it, during the imports included, dies of SIGINT (status 130 in a shell) and no traceback."""
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:
        return _interrupted()


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
