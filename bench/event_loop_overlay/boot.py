"""Start-up hook of an overlay interpreter made by ``bench/event_loops.py`` (copied into its site-packages).

Kept to the standard library and the loop's own package: importing the toolkit here would change what every
benchmark process loads before it starts, and so what it measures.
"""

from __future__ import annotations

import asyncio
import site


def boot(site_packages: str, loop: str) -> None:
    """See the packages of the environment the overlay was made from, and make every new loop a ``loop`` one."""
    site.addsitedir(site_packages)
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
