"""``python -m iii_engine`` = ``iii-engine``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
