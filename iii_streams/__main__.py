"""``python -m iii_streams`` = ``iii-streams``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
