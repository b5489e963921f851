"""Drive stream::* on one stream through the engine with whichever SDK runs this script; print the results as
one JSON line.

Usage: python drive_stream.py ENGINE_URL STREAM_NAME
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from iii import register_worker

INCREMENTS = 20


def main() -> None:
    url, name = sys.argv[1:3]
    client = register_worker(url)

    def call(function_id: str, **payload: Any) -> Any:
        return client.trigger({"function_id": function_id, "payload": {"stream_name": name, **payload}})

    out: dict[str, Any] = {}
    value = {"n": 1, "tags": ["x", []], "big": 2**70, "ü": "✓", "z": None}
    out["set"] = call("stream::set", group_id="g", item_id="a", data=value)
    out["set_again"] = call("stream::set", group_id="g", item_id="a", data=value)
    out["get"] = call("stream::get", group_id="g", item_id="a")
    ops = [{"type": "increment", "path": "n", "by": 1}]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: call("stream::update", group_id="g", item_id="ctr", ops=ops), range(INCREMENTS)))
    out["ctr"] = call("stream::get", group_id="g", item_id="ctr")
    out["list"] = call("stream::list", group_id="g")
    out["groups"] = call("stream::list_groups")
    out["delete"] = call("stream::delete", group_id="g", item_id="a")
    out["delete_missing"] = call("stream::delete", group_id="g", item_id="a")
    out["after"] = call("stream::get", group_id="g", item_id="a")
    print(json.dumps(out), flush=True)
    client.shutdown()


if __name__ == "__main__":
    main()
