"""A password in the remote engine's URL of a bridge (``user:pw@``, ``?password=``) and in a stream store URL the
factory refuses never shows in a message, a log line or a forwarded function's description."""

from __future__ import annotations

import pytest

from iii_engine.modules.bridge.link import BridgeCallError, BridgeLink
from iii_streams.urls import check_scheme

URL = "ws://bridge:s3cret@remote:49134/?password=hunter2"


def test_the_link_names_its_remote_with_the_password_masked() -> None:
    link = BridgeLink(URL, role="client")
    assert link.shown == "ws://bridge:***@remote:49134/?password=***"
    with pytest.raises(BridgeCallError) as failure:
        link._running()
    assert "s3cret" not in str(failure.value) and "hunter2" not in str(failure.value)
    assert "ws://bridge:***@remote:49134/?password=***" in str(failure.value)


def test_a_refused_store_url_is_named_with_its_password_masked() -> None:
    with pytest.raises(ValueError) as failure:
        check_scheme("ftp://app:s3cret@files/x?password=hunter2")
    assert "s3cret" not in str(failure.value) and "hunter2" not in str(failure.value)
    assert "'ftp://app:***@files/x?password=***'" in str(failure.value)
