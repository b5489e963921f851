"""``python -m iii_channels`` = ``iii-channel``."""


def main() -> int:
    """Entry point of the ``iii-channel`` console script (:func:`iii_channels.cli.main`): a Ctrl-C before the
    command handles it, during the imports included, exits with status 130 and no traceback."""
    try:
        from .cli import main as run

        return run()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
