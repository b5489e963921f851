"""The error of a SQLite file deleted under an open store is a public, documented class: ``StreamFileLostError``
(``iii_streams``), still a ``StreamBackendError``, and it survives a pickle round trip.

Before: tracebacks named ``iii_streams.sql._FileLostError``, a private class a caller could not import to catch
it; its constructor's arguments made ``pickle.loads`` fail (``TypeError: ... missing 3 required positional
arguments``), so it could not cross a process (``concurrent.futures``, ``multiprocessing``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from iii.stream import StreamGetInput, StreamSetInput
from iii_streams import SQLStream, StreamBackendError, StreamError, StreamFileLostError

pytestmark = pytest.mark.timeout(30)


async def test_a_deleted_file_raises_the_public_class(tmp_path: Path) -> None:
    path = tmp_path / "gone.db"
    async with SQLStream.from_url(f"sqlite+aiosqlite:///{path}", create=True) as store:
        await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="a", data=1))
        os.unlink(path)
        with pytest.raises(StreamFileLostError) as write:
            await store.set(StreamSetInput(stream_name="s", group_id="g", item_id="a", data=2))
        with pytest.raises(StreamFileLostError) as read:
            await store.get(StreamGetInput(stream_name="s", group_id="g", item_id="a"))
    for caught in (write, read):
        error = caught.value
        assert f"{type(error).__module__}.{type(error).__qualname__}" == "iii_streams.errors.StreamFileLostError"
        assert isinstance(error, StreamBackendError) and isinstance(error, StreamError)
        assert str(path) in error.problem
    assert write.value.applied is False  # not sent: the check at the connection's checkout found it gone

    back = pickle.loads(pickle.dumps(write.value))
    assert type(back) is StreamFileLostError
    assert (str(back), back.applied, back.problem, back.advice) == (
        str(write.value), False, write.value.problem, write.value.advice)
