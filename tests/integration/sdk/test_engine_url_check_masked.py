"""An engine URL that cannot name an engine is refused at once, and the refusal quotes the URL with its password
masked; ``shown_url`` masks secrets after ``#`` and ``;`` too.

Before: ``III("http://u:s3cret@h:1")`` raised ``ValueError: engine URL 'http://u:s3cret@h:1' has scheme 'http' ...``
with the password in clear, and ``shown_url`` returned a URL without ``@`` or ``?`` as it was
(``ws://engine/#token=t0k``).
"""

from __future__ import annotations

import pytest

from iii import III
from iii.connection import shown_url

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(("url", "why"), [
    ("http://u:s3cret@h:1", "has scheme 'http'"),
    ("u:s3cret@h:1", "has no scheme"),
    ("ghp_s3cret@h:1", "has no scheme"),
    ("ws://u:s3cret@:1", "has no host"),
    ("ws://u:s3cret@h:port", "has an invalid port 'port'"),
    ("ws://u:s3cret@h:0", "has port 0"),
    ("ws://u:s3cret@[::1", "cannot be parsed"),
    ("http://h:1/?token=s3cret", "has scheme 'http'"),
])
def test_a_refused_engine_url_keeps_its_password_out_of_the_error(url: str, why: str) -> None:
    with pytest.raises(ValueError) as failure:
        III(url)
    assert why in str(failure.value)
    assert "s3cret" not in str(failure.value)
    assert "***" in str(failure.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("ws://engine:49134/#token=t0k", "ws://engine:49134/#token=***"),
    ("ws://engine:49134/;jsessionid=t0k", "ws://engine:49134/;jsessionid=***"),
    ("ws://engine:49134/", "ws://engine:49134/"),
])
def test_shown_url_masks_fragments_and_matrix_parameters(url: str, shown: str) -> None:
    assert shown_url(url) == shown
