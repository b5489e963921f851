"""``python -m iii_channels`` = ``iii-channel``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
