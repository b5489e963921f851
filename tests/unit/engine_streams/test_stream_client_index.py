"""A stream-socket client's subscriptions are indexed by group: an event asks one dict, not every subscription.

Before, ``_Client.wants`` scanned all of a client's subscriptions for every event of a group it watches: 20 clients
holding 1,000 item subscriptions of one busy group (on items that do not exist) took writes from 3,450 to 131 a
second and an honest subscriber's lag from 0.3 to 8 ms. The index must say what the scan said through joins,
replaces under the same subscription id, leaves and disconnects.
"""

from __future__ import annotations

import random
from typing import Any, cast

import pytest

from iii_engine.modules.stream.socket import StreamSocketServer, Subscription, _Client
from iii_streams.events import make_event


class _Ws:
    remote_address = ("127.0.0.1", 1)


def _server() -> StreamSocketServer:
    return StreamSocketServer(*cast(Any, (None,) * 6))  # the index uses none of its collaborators


def _client(server: StreamSocketServer) -> _Client:
    client = _Client(cast(Any, _Ws()), None, 8)
    server._clients.add(client)
    return client


def _scan(client: _Client, event: dict[str, Any]) -> bool:
    """What the index must answer: whether any subscription matches (the old linear scan)."""
    return any(sub.matches(event) for sub in client.subscriptions.values())


def _events() -> list[dict[str, Any]]:
    return [{"streamName": stream, "groupId": group, "id": item}
            for stream in ("S", "T") for group in ("G", "H") for item in ("1", "2", "3", None, 7)]


def test_whole_group_and_item_subscriptions() -> None:
    server = _server()
    client = _client(server)
    server._subscribe(client, "a", Subscription("S", "G", "1"))
    assert client.wants({"streamName": "S", "groupId": "G", "id": "1"})
    assert not client.wants({"streamName": "S", "groupId": "G", "id": "2"})
    assert not client.wants({"streamName": "S", "groupId": "G", "id": None})  # a group-wide event: not an item's
    assert not client.wants({"streamName": "S", "groupId": "H", "id": "1"})
    server._subscribe(client, "b", Subscription("S", "G", None))
    assert client.wants({"streamName": "S", "groupId": "G", "id": "2"})
    assert client.wants({"streamName": "S", "groupId": "G", "id": None})
    server._subscribe(client, "b", None)  # leave: the item subscription stays
    assert not client.wants({"streamName": "S", "groupId": "G", "id": "2"})
    assert client.wants({"streamName": "S", "groupId": "G", "id": "1"})
    # odd events from a custom store match nothing, never raise
    assert not client.wants({"streamName": "S", "groupId": "G", "id": ["1"]})
    assert not client.wants({"streamName": ["S"], "groupId": "G", "id": "1"})
    assert not client.wants({})


def test_a_replace_under_the_same_id_drops_the_old_subscription() -> None:
    server = _server()
    client = _client(server)
    server._subscribe(client, "a", Subscription("S", "G", None))
    server._subscribe(client, "a", Subscription("S", "G", "1"))  # the same id, now an item
    assert not client.wants({"streamName": "S", "groupId": "G", "id": "2"})
    assert client.wants({"streamName": "S", "groupId": "G", "id": "1"})
    server._subscribe(client, "a", Subscription("S", "H", "1"))  # moved to another group
    assert not client.wants({"streamName": "S", "groupId": "G", "id": "1"})
    assert not client.watches(("S", "G")) and server._watchers == {("S", "H"): {client}}
    server._subscribe(client, "a", Subscription("S", "H", "1"))  # a repeat changes nothing
    server._subscribe(client, "a", None)
    assert not client.wants({"streamName": "S", "groupId": "H", "id": "1"})
    assert not client.watches(("S", "H")) and not server._watchers and not client.subscriptions


def test_two_ids_on_one_item_stay_until_both_leave() -> None:
    server = _server()
    client = _client(server)
    server._subscribe(client, "a", Subscription("S", "G", "1"))
    server._subscribe(client, "b", Subscription("S", "G", "1"))
    server._subscribe(client, "a", None)
    assert client.wants({"streamName": "S", "groupId": "G", "id": "1"})  # "b" still holds it
    server._subscribe(client, "b", None)
    assert not client.wants({"streamName": "S", "groupId": "G", "id": "1"})
    assert not client.watches(("S", "G"))


def test_unsubscribe_all_empties_the_index() -> None:
    server = _server()
    client = _client(server)
    subs = {"a": Subscription("S", "G", None), "b": Subscription("S", "G", "1"), "c": Subscription("T", "H", "2")}
    for sub_id, sub in subs.items():
        server._subscribe(client, sub_id, sub)
    assert sorted(client.groups()) == [("S", "G"), ("T", "H")]
    assert client.unsubscribe_all() == subs
    assert not client.subscriptions and not client.groups()
    assert not any(client.wants(event) for event in _events())


@pytest.mark.parametrize("seed", range(5))
def test_the_index_answers_as_the_scan_did_through_random_joins_and_leaves(seed: int) -> None:
    rng = random.Random(seed)
    server = _server()
    client = _client(server)
    for _ in range(2000):
        sub_id = f"s{rng.randrange(12)}"
        if rng.random() < 0.3:
            server._subscribe(client, sub_id, None)
        else:
            server._subscribe(client, sub_id, Subscription(rng.choice("ST"), rng.choice("GH"),
                                                           rng.choice(("1", "2", "3", None))))
        for event in _events():
            assert client.wants(event) == _scan(client, event), (event, dict(client.subscriptions))
        groups = {sub.group for sub in client.subscriptions.values()}
        assert set(client.groups()) == groups
        assert {key for key, clients in server._watchers.items() if client in clients} == groups


def test_an_event_costs_no_look_at_each_subscription(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 item subscriptions of a busy group: an event of the group asks none of them (before: all 1,000)."""
    server = _server()
    client = _client(server)
    for n in range(1000):
        server._subscribe(client, f"s{n}", Subscription("hot", "g", f"missing{n}"))
    looked: list[Subscription] = []
    matches = Subscription.matches

    def counting(self: Subscription, event: Any) -> bool:
        looked.append(self)
        return matches(self, event)

    monkeypatch.setattr(Subscription, "matches", counting)
    server._fan_out(make_event("hot", "g", "1", "update", {"n": 1}))
    server._fan_out(make_event("hot", "g", "missing7", "update", {"n": 2}))
    assert len(looked) == 0
    assert client.queue.qsize() == 1  # missing7's event only
