"""``python -m iii_engine`` = ``iii-engine``."""


def main() -> int:
    """Entry point of the ``iii-engine`` console script (:func:`iii_engine.cli.main`): a Ctrl-C before the engine
    handles it, during the imports included, exits with status 130 and no traceback."""
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
