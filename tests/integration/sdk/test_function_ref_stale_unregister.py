"""A ``FunctionRef`` of an earlier registration of an id leaves a newer registration of that id alone (the reference
SDK's unregistered the newer one)."""

from __future__ import annotations

from .conftest import Harness, MakeWorker


def test_an_old_function_ref_leaves_a_newer_registration_of_its_id_alone(
        served: Harness, make_worker: MakeWorker) -> None:
    worker, caller = make_worker("worker"), make_worker("caller")
    old = worker.register_function("f", lambda data: "old")
    old.unregister()
    new = worker.register_function("f", lambda data: "new")
    served.wait_registered("f")
    old.unregister()  # before: it unregistered the newer "f" (from the engine and from the worker's handlers)
    worker.list_functions()  # a round trip: the engine handled whatever that sent
    assert "f" in served.function_ids()
    assert caller.trigger({"function_id": "f", "payload": {}, "timeout_ms": 5000}) == "new"
    new.unregister()  # the current reference still unregisters
    worker.list_functions()
    assert "f" not in served.function_ids()
