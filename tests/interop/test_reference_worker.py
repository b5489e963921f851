"""The reference SDK (its own virtual environment) and ours as workers on our engine, calling each other."""

from __future__ import annotations

import pytest

from .refsdk import our_python, reference_python, run_scenario

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    ("server", "caller"),
    [("reference", "ours"), ("ours", "reference"), ("reference", "reference")],
)
async def test_workers_call_each_other(engine_url: str, server: str, caller: str) -> None:
    pythons = {"reference": reference_python(), "ours": our_python()}
    prefix = f"{server}side"
    async with run_scenario(pythons[server], engine_url, "serve", prefix) as serving:
        ready = await serving.step()
        assert ready["step"] == "ready"
        async with run_scenario(pythons[caller], engine_url, "call", prefix) as calling:
            echo = await calling.step()
            assert echo["result"] == {"echo": {"n": 1, "s": "é"}, "by": prefix}
            fail = await calling.step()
            assert f"{prefix} failed on purpose" in fail["error"]
            assert "invocation_failed" in fail["error"]
            missing = await calling.step()
            assert missing["error"] == "{'code': 'function_not_found', 'message': 'Function nobody::home not found'}"
            functions = await calling.step()
            assert {f"{prefix}::echo", f"{prefix}::fail"} <= set(functions["ids"])
            assert not any(i.startswith("engine::") for i in functions["ids"])
            workers = await calling.step()
            assert {"caller", f"{prefix}-worker"} <= set(workers["names"])
            assert await calling.finish() == 0
        assert await serving.finish() == 0
