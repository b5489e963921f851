"""Alert rules and their actions (attack e): duplicate rule names, malformed actions refused at start, webhook
redirects not followed, secrets in webhook URLs masked in the log, and an action that makes its own rule fire
again bounded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web
from module_worker import ModuleWorker

from iii_engine.modules.base import ModuleStartError
from iii_engine.modules.observability import alerts
from iii_engine.modules.observability import module as observability
from tests.integration.modules.test_observability import engine_with
from tests.polling import until

_LOGGER = "iii_engine.modules.observability.module"


def rule(name: str, action: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A rule firing at every evaluation (the engine's call count is always >= 0)."""
    return {"name": name, "metric": "iii.invocations.total", "threshold": 0, "operator": ">=",
            "cooldown_seconds": 0, "action": action, **extra}


def feed(module: Any, metric: str) -> None:
    """One gauge point of 1.0 for ``metric`` in the module's store, as a worker's MTRC frame would add it."""
    module.metrics.add([{"name": metric, "timestamp_unix_nano": observability._now_ns(), "metric_type": "gauge",
                         "data_points": [{"value": 1.0}]}])


@asynccontextmanager
async def hook_server(status: int | list[int], location: str = "/landing",
                      path: str = "/hook") -> AsyncIterator[tuple[str, list[str]]]:
    """A local endpoint answering each request to ``path`` with ``status`` (a list: its first item when the request
    comes) and ``Location: location``, counting what comes to ``/landing`` too; yields its ``host:port`` and the
    requests seen (``"POST /hook 57"``: method, path, body bytes)."""
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path} {len(await request.read())}")
        answer = status[0] if isinstance(status, list) else status
        return web.Response(status=answer, headers={"Location": location})

    async def landing(request: web.Request) -> web.Response:
        seen.append(f"{request.method} {request.path} {len(await request.read())}")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", path, hook)
    app.router.add_route("*", "/landing", landing)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_two_rules_of_one_name_stop_the_start() -> None:
    # Before: both taken; state, webhook deliveries and actions are keyed by name, and the second rule's webhook
    # never got a POST.
    rules = [rule("cpu", {"type": "webhook", "url": "http://127.0.0.1:9/a"}),
             rule("ok", {"type": "log"}),
             rule("cpu", {"type": "webhook", "url": "http://127.0.0.1:9/b"})]
    with pytest.raises(ModuleStartError, match=r"two alert rules are named 'cpu' \(alerts\[0\] and alerts\[2\]\)"):
        async with engine_with({"alerts": rules}):
            pass


@pytest.mark.parametrize(("action", "problem"), [
    ({"type": "webhook", "url": "not a url"}, "must be an http:// or https:// URL with a host, got 'not a url'"),
    ({"type": "webhook", "url": "ftp://files.example.com/x"}, "must be an http:// or https:// URL"),
    ({"type": "webhook", "url": ""}, "must be an http:// or https:// URL with a host, got ''"),
    ({"type": "webhook", "url": "http://u:S3CRET@:80/?token=T0KEN"}, r"got 'http://u:\*\*\*@:80/…'$"),
    # each accepted before: every delivery then died of an uncounted UnicodeError (IDNA)
    ({"type": "webhook", "url": "http://hooks..example.com/alert"},
     r"a host no request can be sent to \(an empty label\): 'http://hooks\.\.example\.com/…'"),
    ({"type": "webhook", "url": "http://.../"}, r"a host no request can be sent to \(an empty label\)"),
    ({"type": "webhook", "url": f"https://{'a' * 64}.example.com/T/B/SECRET"},
     r"\(a label over 63 characters\): 'https://a+\.example\.com/…'$"),
    ({"type": "webhook", "ur1": "http://h/x"}, "unknown key 'ur1' in a webhook action \\(did you mean 'url'"),
    ({"type": "webhook", "url": "http://h/x", "headers": {"A": "b"}}, "unknown key 'headers' in a webhook action"),
    ({"type": "function", "path": "alert::sink", "extra": 1}, "unknown key 'extra' in a function action"),
    ({"type": "function", "path": "engine::alerts::evaluate"}, "may not call 'engine::alerts::evaluate'"),
])
async def test_a_malformed_action_stops_the_start(action: dict[str, Any], problem: str) -> None:
    # Before: each was taken, and a malformed URL failed 4 attempts at each alert (an unknown key was ignored).
    with pytest.raises(ModuleStartError, match=r"config\.alerts\[0\]\.action: .*" + problem):
        async with engine_with({"alerts": [rule("x", action)]}):
            pass


async def test_a_redirect_is_a_failed_delivery_and_secrets_are_masked(caplog: pytest.LogCaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the 302 was followed with a GET without the body, counted in webhook_sent; the log held the URL's
    # password and token as written.
    monkeypatch.setattr(observability, "WEBHOOK_BUDGET_S", 1.5)  # the first attempt and its retry, then given up
    caplog.set_level(logging.WARNING, _LOGGER)
    async with hook_server(302, "/landing?token=L0CTOKEN") as (address, seen):
        url = f"http://u:S3CRET@{address}/hook?token=T0KEN"
        engine = engine_with({"alerts": [rule("hop", {"type": "webhook", "url": url})]})
        async with engine:
            module: Any = engine.module("observability")
            module.evaluate_alerts()  # (or the alert loop's first pass did: one delivery at a time)
            await until(lambda: module.webhook_failed == 1, within=5)
        assert module.webhook_sent == 0
        assert seen and all(line.startswith("POST /hook ") for line in seen), seen  # never a GET to /landing
        text = "\n".join(record.getMessage() for record in caplog.records)
        assert "answered HTTP 302 redirecting to /… (redirects are not followed)" in text
        assert f"alert 'hop': webhook http://u:***@{address}/… failed (attempt 1)" in text
        assert "S3CRET" not in text and "T0KEN" not in text and "L0CTOKEN" not in text


async def test_an_action_that_fires_its_own_rule_again_is_bounded() -> None:
    # Before: a function action calling engine::alerts::evaluate under cooldown 0 ran without end (364,835 calls in
    # 15 s in the attack); now a rule's action runs at most once per ALERT_ACTION_MIN_INTERVAL_S.
    calls = 0
    rules = [rule("loop", {"type": "function", "path": "loop::act"}, metric="loop.go", threshold=1)]
    async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
        module: Any = engine.module("observability")

        async def act(data: Any) -> None:
            nonlocal calls
            calls += 1
            await worker.result("engine::alerts::evaluate", {})  # the rule fires again at once

        await worker.function("loop::act", act)
        # the rule fires from now on (not at the alert loop's first pass, before loop::act was registered)
        feed(module, "loop.go")
        await worker.result("engine::alerts::evaluate", {})
        await until(lambda: module.alert_actions_throttled >= 1, within=5)
        # a window to watch: a loop left running would make hundreds of calls in it
        await asyncio.sleep(observability.ALERT_ACTION_MIN_INTERVAL_S * 1.5)
        assert calls == 1
        health = await worker.result("engine::health::check", {})
        assert health["components"]["telemetry"]["details"]["alert_actions_throttled"] == 1
        # once the interval passed, the rule's action runs again
        await worker.result("engine::alerts::evaluate", {})
        await until(lambda: calls == 2, within=5)


async def test_a_rule_on_no_engine_counter_stops_the_start_a_near_miss_is_warned(
        caplog: pytest.LogCaptureFixture) -> None:
    # Before: iii.invocations.totl was taken and never fired, nor appeared in engine::alerts::list.
    with pytest.raises(ModuleStartError, match=r"config\.alerts\[0\]\.metric: no engine counter is named "
                       r"'iii\.invocations\.totl' \(did you mean 'iii\.invocations\.total'\?"):
        async with engine_with({"alerts": [rule("typo", {"type": "log"}, metric="iii.invocations.totl")]}):
            pass
    # outside iii.invocations.* / iii.workers.* a name reads the workers' metrics (the SDK's iii.worker.* gauges):
    # taken, a near miss of a counter warned
    rules = [rule("near", {"type": "log"}, metric="iii.invocation.total"),
             rule("gauge", {"type": "log"}, metric="iii.worker.cpu.percent")]
    with caplog.at_level(logging.WARNING, "iii_engine.modules.observability.alerts"):
        async with engine_with({"alerts": rules}) as engine:
            module: Any = engine.module("observability")
            assert sorted(module._counter_values()) == sorted(alerts.ENGINE_COUNTERS)
    warned = [record.getMessage() for record in caplog.records if "no engine counter" in record.getMessage()]
    assert warned == ["alert rule on 'iii.invocation.total': no engine counter has that name (did you mean "
                      "'iii.invocations.total'?); the rule reads the metric of that name workers send"]


async def test_health_is_degraded_while_every_webhook_delivery_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: healthy while every alert was lost.
    monkeypatch.setattr(observability, "WEBHOOK_BUDGET_S", 0.3)  # one attempt, then given up in the pause
    monkeypatch.setattr(observability, "ALERT_ACTION_MIN_INTERVAL_S", 0.0)
    status = [500]
    async with hook_server(status) as (address, seen):
        rules = [rule("r", {"type": "webhook", "url": f"http://{address}/hook?token=T0KEN"}, metric="hook.go")]
        async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
            module: Any = engine.module("observability")
            feed(module, "hook.go")
            for failed in (1, 2):
                module.evaluate_alerts()
                await until(lambda: module.webhook_failed == failed)  # noqa: B023 - awaited within the pass
            health = await worker.result("engine::health::check", {})
            assert health["status"] == "healthy"  # two in a row: not yet
            module.evaluate_alerts()
            await until(lambda: module.webhook_failed == 3)
            health = await worker.result("engine::health::check", {})
            component = health["components"]["alert_deliveries"]
            assert (health["status"], component["status"]) == ("degraded", "degraded")
            assert component["details"]["failed_in_a_row"] == 3 and component["details"]["webhook_sent"] == 0
            assert len(seen) == 3  # one attempt each
            assert component["details"]["last_failure"] == f"alert 'r': webhook http://{address}/…: no success " \
                "within 0.3 s (answered HTTP 500)"
            status[0] = 200
            module.evaluate_alerts()
            await until(lambda: module.webhook_sent >= 1)
            health = await worker.result("engine::health::check", {})
            assert (health["status"], health["components"]["alert_deliveries"]["status"]) == ("healthy", "healthy")


async def test_a_delivery_that_raises_an_unexpected_error_is_a_counted_failure(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: aiohttp raised UnicodeError for this host (IDNA), which the delivery did not catch: the task died
    # ("Task exception was never retrieved"), webhook_failed stayed 0. Such a URL is now refused at start; a delivery
    # must survive whatever the request raises all the same.
    monkeypatch.setattr(observability, "WEBHOOK_BUDGET_S", 0.3)  # one attempt, then given up in the pause
    caplog.set_level(logging.WARNING, _LOGGER)
    async with engine_with({"alerts": [rule("log", {"type": "log"}, metric="never.sent")]}) as engine:
        module: Any = engine.module("observability")
        module._deliver("dots", "http://hooks..example.com/alert/SECRETPATH", {"alert": "dots"})
        (task,) = module._webhook_runs
        await until(lambda: task.done(), within=5)
        assert task.exception() is None
        assert (module.webhook_failed, module.webhook_sent) == (1, 0)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "alert 'dots': webhook http://hooks..example.com/… failed (attempt 1): UnicodeError" in text
    assert "SECRETPATH" not in text


async def test_one_rule_failing_degrades_health_beside_a_working_one_its_secret_path_unshown(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: one failed_in_a_row for all rules, reset by each success of the working rule: healthy while every alert
    # of the broken one was lost; the Slack-style URL's secret path was logged and returned by engine::health::check.
    monkeypatch.setattr(observability, "WEBHOOK_BUDGET_S", 0.3)
    monkeypatch.setattr(observability, "ALERT_ACTION_MIN_INTERVAL_S", 0.0)
    caplog.set_level(logging.WARNING, _LOGGER)
    secret = "/services/T0AAAAAAA/B0BBBBBBB/SLACKSECRETxyz"
    async with hook_server(500, path=secret) as (address, seen):
        rules = [rule("broken", {"type": "webhook", "url": f"http://{address}{secret}"}, metric="hook.go"),
                 rule("working", {"type": "webhook", "url": f"http://{address}/landing"}, metric="hook.go")]
        async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
            module: Any = engine.module("observability")
            feed(module, "hook.go")
            for done in (1, 2, 3):
                module.evaluate_alerts()
                await until(lambda: (module.webhook_failed, module.webhook_sent) == (done, done))  # noqa: B023
            health = await worker.result("engine::health::check", {})
            component = health["components"]["alert_deliveries"]
            assert (health["status"], component["status"]) == ("degraded", "degraded")
            details = component["details"]
            assert (details["failing_rules"], details["failed_in_a_row"]) == (["broken"], 3)
            assert details["last_failure"] == f"alert 'broken': webhook http://{address}/…: no success within " \
                "0.3 s (answered HTTP 500)"
    assert sum(line.startswith(f"POST {secret} ") for line in seen) == 3
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert f"alert 'broken': webhook http://{address}/… not delivered" in text
    assert "SLACKSECRET" not in text and "SLACKSECRET" not in str(health)


async def test_a_degraded_delivery_state_expires_once_no_delivery_failed_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: after 3 failures, an alert that resolved (nothing more to deliver) left the engine degraded for good.
    monkeypatch.setattr(observability, "WEBHOOK_BUDGET_S", 0.3)
    monkeypatch.setattr(observability, "ALERT_ACTION_MIN_INTERVAL_S", 0.0)
    monkeypatch.setattr(observability, "ALERT_DELIVERIES_DEGRADED_FOR_S", 2.0, raising=False)
    async with hook_server(500) as (address, _seen):
        rules = [rule("r", {"type": "webhook", "url": f"http://{address}/hook"}, metric="hook.go")]
        async with engine_with({"alerts": rules}) as engine, ModuleWorker(engine.url) as worker:
            module: Any = engine.module("observability")
            feed(module, "hook.go")
            for failed in (1, 2, 3):
                module.evaluate_alerts()
                await until(lambda: module.webhook_failed == failed)  # noqa: B023 - awaited within the pass

            async def status() -> tuple[str, str]:
                health = await worker.result("engine::health::check", {})
                return health["status"], health["components"]["alert_deliveries"]["status"]

            assert await status() == ("degraded", "degraded")
            # no delivery since (the alert resolved): healthy once the last failure is 2 s old
            await until(lambda: module._deliveries()["alert_deliveries"]["status"] == "healthy", within=6)
            assert await status() == ("healthy", "healthy")
            assert module.webhook_failed == 3
            # a failure after the quiet spell starts a new count: one is not three in a row
            module.evaluate_alerts()
            await until(lambda: module.webhook_failed == 4)
            assert await status() == ("healthy", "healthy")
