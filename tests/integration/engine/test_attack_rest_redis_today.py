"""Attack round on the REST API's shared deadline timer and one-_Race-per-request (3a079c5, c2a1719): every
request ends at its own deadline (never early, never left waiting), whatever the order its deadline came in,
cancellations and stop/start cycles; nothing stays behind in the module."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from iii_engine.channels import ChannelRelay
from iii_engine.modules.http.api import RestApiModule, _Refused, _Timeout
from iii_engine.modules.http.routes import RouteTable, parse_http_trigger
from tests.unit.modules.test_http_race import _Started

ANSWER = ({"status_code": 200, "body": {"ok": True}}, None)
LATE = 0.5  # seconds a request may end after its deadline on this shared, loaded machine (0.28 seen)


class _Services:
    """The relay; each call is answered at the time ``answer_at`` pops for it (``None``: never)."""

    def __init__(self) -> None:
        self.channels = ChannelRelay()
        self.answer_at: list[float | None] = []
        self.calls: list[_Started] = []
        self.hang_condition = False

    async def start_invocation(self, function_id: str, payload: dict[str, Any]) -> _Started:
        loop = asyncio.get_running_loop()
        started = _Started(loop.create_future())
        when = self.answer_at.pop(0) if self.answer_at else None
        if when is not None:
            loop.call_at(when, self._answer, started.future)
        self.calls.append(started)
        return started

    @staticmethod
    def _answer(future: asyncio.Future[tuple[Any, Any]]) -> None:
        if not future.done():
            future.set_result(ANSWER)

    async def condition_passes(self, function_id: str, payload: dict[str, Any], *, wait_if_busy: bool = True,
                               busy_until: float | None = None) -> bool:
        await asyncio.get_running_loop().create_future()  # a condition function that never answers
        return True


async def _module(services: _Services) -> RestApiModule:
    module = RestApiModule(services, {"port": 0})  # type: ignore[arg-type]
    module._limit = asyncio.Semaphore(100_000)
    module._stopping = asyncio.get_running_loop().create_future()
    module._latest_deadline = float("-inf")
    module.routes.add(parse_http_trigger("t", "f", {"api_path": "json"}))
    module.routes.add(parse_http_trigger("c", "f", {"api_path": "cond", "condition_function_id": "never"}))
    return module


async def _timed(module: RestApiModule, path: str, deadline: float,
                 request: Any = None) -> tuple[str, float, float]:
    """The outcome, and when the request started and ended."""
    if request is None:
        request = make_mocked_request("GET", f"/{path}", headers={"Host": "x"})
    match = module.routes.match("GET", f"/{path}")
    assert match is not None
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        response = await module._run(request, match, bytearray(), deadline)
        return f"{response.status}", began, loop.time()
    except _Timeout:
        return "timeout", began, loop.time()
    except _Refused as exc:
        return f"refused {exc.status}", began, loop.time()


@pytest.mark.parametrize("seed", range(3))
async def test_mixed_deadlines_each_end_at_their_own_time(seed: int) -> None:
    """Deadlines in and out of arrival order, some answered before them, some never, some conditions hanging,
    some requests cancelled: each unanswered request ends at its deadline (not before, not much after), each
    answered one gets its answer, cancelled ones leave nothing."""
    rng = random.Random(seed)
    services = _Services()
    module = await _module(services)
    loop = asyncio.get_running_loop()
    paths = ["cond" if rng.random() < 0.1 else "json" for _ in range(600)]
    # made beforehand: making them costs more than the requests, and the deadlines are about the module
    requests = [make_mocked_request("GET", f"/{path}", headers={"Host": "x"}) for path in paths]
    # The loop's own stalls (the other test process, a GC pass on two shared cores) are measured alongside and
    # allowed on top of LATE: a request that ends late while the loop was free to end it still fails (CI once saw
    # 0.68 s of lateness with LATE 0.5).
    stalls = [0.0]
    probing = True

    async def probe() -> None:
        while probing:
            before = loop.time()
            await asyncio.sleep(0.01)
            stalls[0] = max(stalls[0], loop.time() - before - 0.01)

    prober = asyncio.ensure_future(probe())
    start = loop.time()
    jobs: list[tuple[asyncio.Task[tuple[str, float, float]], float, float | None, str, bool]] = []
    for n in range(600):
        deadline = start + 0.4 + (n / 600) * 0.4 + (rng.uniform(-0.3, 0.3) if rng.random() < 0.3 else 0)
        path = paths[n]
        answer = None
        if path == "json" and rng.random() < 0.5:
            answer = max(start, deadline - rng.uniform(0.02, 0.3))
            services.answer_at.append(answer)
        elif path == "json":
            services.answer_at.append(None)
        cancel = rng.random() < 0.15
        task = asyncio.ensure_future(_timed(module, path, deadline, requests[n]))
        jobs.append((task, deadline, answer, path, cancel))
        if cancel:
            loop.call_at(max(start, deadline - rng.uniform(0.01, 0.2)), task.cancel)
        if n % 50 == 0:
            await asyncio.sleep(0)  # let some start before others are made (arrival spread over loop turns)
    # Every deadline is at most ~1.1 s from the start: 20 s is a bound for a hang, not for the deadlines. CI met the
    # 10 s it had twice (seed 1, CancelledError) where 8 local runs took 2.3 s: what was still waiting is named.
    _, waiting = await asyncio.wait([j[0] for j in jobs], timeout=20)
    probing = False
    await prober
    late = LATE + stalls[0]
    assert not waiting, [(path, round(deadline - start, 3), answer and round(answer - start, 3), cancel)
                         for task, deadline, answer, path, cancel in jobs if task in waiting][:20]
    for task, deadline, answer, path, cancel in jobs:
        if task.cancelled():
            assert cancel
            continue
        outcome, began, ended = task.result()
        due = max(deadline, began)  # a deadline already past when the request started: it ends at once
        if answer is not None and outcome == "200":
            assert ended <= due + late, (ended - due, stalls[0])
            continue
        assert outcome == "timeout", (outcome, path, answer, deadline - start)
        assert deadline <= ended <= due + late, (ended - due, path, stalls[0])
    assert not module._races, len(module._races)
    await module.stop()
    assert module._sweep is None


async def test_stop_and_start_again_keep_deadlines() -> None:
    """A request still waiting at stop gets 503; requests after a start again end at their deadlines."""
    services = _Services()
    module = await _module(services)
    loop = asyncio.get_running_loop()
    old = asyncio.ensure_future(_timed(module, "json", loop.time() + 30))
    await asyncio.sleep(0)
    await module.stop()
    assert (await asyncio.wait_for(old, 5))[0] == "refused 503"
    for _ in range(3):  # start again (the listener is left out: only the module's own state)
        module._stopping = loop.create_future()
        module._latest_deadline = float("-inf")
        deadlines = [loop.time() + 0.05 + 0.01 * n for n in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*(_timed(module, "json", d) for d in deadlines)), 5)
        for (outcome, _, ended), deadline in zip(results, deadlines, strict=True):
            assert outcome == "timeout" and deadline <= ended <= deadline + LATE
        assert not module._races
        await module.stop()


def test_static_lookup_matches_the_scan_for_odd_routes_and_urls() -> None:
    """The one-dict-lookup for static routes answers what the scan answers (the 6e61c31 matcher, checked
    differentially against that commit's RouteTable for 3000 random tables too): escapes, %2F, lone and double
    colons, empty segments, trailing slashes, unicode, lower-case methods, routes replaced and removed."""
    segments = ["a", "b", ":x", ":y", ":", "", "%2F", "é", "a b", "%", "%25", "::", ":a"]
    url_segments = ["a", "b", "", "%2F", "é", "%C3%A9", "a b", "a%20b", "%", "%25", ":", ":x", "::", "x", "a" * 300]
    rng = random.Random(7)
    for _ in range(800):
        table = RouteTable()
        for n in range(rng.randint(1, 12)):
            path = "/".join(rng.choice(segments) for _ in range(rng.randint(1, 3)))
            path = ("/" if rng.random() < 0.5 else "") + path
            method = rng.choice(["get", "post"])
            if path.strip("/"):
                table.add(parse_http_trigger(f"t{n}", "f", {"api_path": path, "http_method": method}))
            if rng.random() < 0.2:
                table.remove(f"t{rng.randrange(n + 1)}")
        scan = RouteTable()
        scan._by_key, scan._by_method = table._by_key, table._by_method  # no static index: every URL is scanned
        for _ in range(30):
            url = "/".join(rng.choice(url_segments) for _ in range(rng.randint(1, 4)))
            url = ("/" if rng.random() < 0.8 else "") + url + ("/" if rng.random() < 0.1 else "")
            for method in ("GET", "get", "POST", "PUT"):
                got, want = table.match(method, url), scan.match(method, url)
                assert (got and (got.route, got.path_params)) == (want and (want.route, want.path_params)), url
