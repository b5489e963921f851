"""Secrets ``mask_passwords`` used to show: a token alone in an http(s)/ws(s) URL's userinfo (sent as Basic auth),
percent-encoded key names (``?api%5Fkey=``), keys after ``#`` (the OAuth implicit flow's ``#access_token=``), keys
that were not on the list (``authorization``, ``credentials``, ``secrets``, ``bearer``, ``hmac``, ``code``,
``password[]``), the part of a value after a quote (``token=ab'-cd`` was shown as ``token=***'-cd``), and tokens in
the user part beside a password, without hiding user names that only look a little like them.
"""

from __future__ import annotations

import time

import pytest

from iii._cli import mask_passwords

pytestmark = pytest.mark.timeout(30)

# Tokens of the shapes their vendors issue (made up, not live).
GITHUB = "ghp_" + "16C7e42F292c6912E7710c838347Ae178B4a"
HUGGING_FACE = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"
ATLASSIAN = "ATATT3xFfGF0T4JNjA1Hj0AZmC-7DQz_jqKlH8YtYk6Dn0Ag3pVwIdEsLnQxVh6f1s5ZtRbk=1A2B3C4D"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(("text", "shown"), [
    # userinfo without a password, on the schemes whose clients send it as Basic auth
    ("https://ghp_t0k@github.com/o/r", "https://***@github.com/o/r"),
    ("fetch git+https://ghp_t0k@github.com/o/r.git", "fetch git+https://***@github.com/o/r.git"),
    ("HTTP://t0k@h:8080", "HTTP://***@h:8080"),
    ("wss://t0k@engine:49134/ ws://t0k@engine", "wss://***@engine:49134/ ws://***@engine"),
    ("https://t0k:@h/x", "https://***@h/x"),
    ("https://a@t0k@h/x?next=b@c", "https://***@h/x?next=b@c"),
    # percent-encoded key names, read decoded
    ("https://h/x?api%5Fkey=s3cret&%74oken=t0k&%70assword=pw", "https://h/x?api%5Fkey=***&%74oken=***&%70assword=***"),
    # '#' starts key=value pairs too
    ("https://h/cb#access_token=t0k&token_type=bearer&expires_in=3600",
     "https://h/cb#access_token=***&token_type=bearer&expires_in=3600"),
    ("https://h/cb?state=z#id_token=t0k", "https://h/cb?state=z#id_token=***"),
    # keys that were not on the list, and array forms
    ("https://h/x?authorization=Bearer%20t0k&credentials=c&secrets=s&bearer=b&hmac=h&x_hmac=h2",
     "https://h/x?authorization=***&credentials=***&secrets=***&bearer=***&hmac=***&x_hmac=***"),
    ("https://h/x?code=c0de&state=z&error_code=7", "https://h/x?code=***&state=z&error_code=7"),
    ("https://h/x?password[]=a&token[0]=b&user[password]=c&tag[]=d",
     "https://h/x?password[]=***&token[0]=***&user[password]=***&tag[]=d"),
    ("https://h/x;jsessionid=s1 https://h/y?session=s2&PHPSESSID=s3&tokens=t",
     "https://h/x;jsessionid=*** https://h/y?session=***&PHPSESSID=***&tokens=***"),
    # a quote inside the value does not end it; a quote that closes a quoted URL does
    ("https://h/x?token=ab'-cd&x=1", "https://h/x?token=***&x=1"),
    ("https://h/x?token=ab\"cd https://h/y?token=ab`cd", "https://h/x?token=*** https://h/y?token=***"),
    ("https://h/x?token=ab'),cd", "https://h/x?token=***"),
    ("url='https://h/x?token=t0k': 400, message", "url='https://h/x?token=***': 400, message"),
    ("url=URL('https://h/x?token=t0k')", "url=URL('https://h/x?token=***')"),
    ("[('https://h/x?token=t0k', 1)]", "[('https://h/x?token=***', 1)]"),
    ('{"u":"https://h/x?token=t0k"}', '{"u":"https://h/x?token=***"}'),
    ("see <'https://h/x?token=t0k'>.", "see <'https://h/x?token=***'>."),
    # a token in the user part beside a password (a git host's placeholder password): it showed
    (f"https://{GITHUB}:x-oauth-basic@github.com/o/r", "https://***:***@github.com/o/r"),
    ("clone https://0123456789abcdef0123456789abcdef01234567:x-oauth-basic@github.com/o/r",
     "clone https://***:***@github.com/o/r"),
    ("WSS://glpat-xYz12AbC34dEf56GhI78jK:pw@gitlab.example/x git+https://xoxb-123456789012-1234567890123-AbCdEf:x@h",
     "WSS://***:***@gitlab.example/x git+https://***:***@h"),
])
def test_masked(text: str, shown: str) -> None:
    assert mask_passwords(text) == shown


@pytest.mark.parametrize("text", [
    "postgresql://app@db/app", "redis://default@cache:6379/0", "ssh://git@github.com/o/r", "mysql://nobody@nowhere/x",
    "https://h/x?max_tokens=5&country_code=US&api%5Fversion=2&tag[]=a", "https://h/?q=a:b@c#section",
    "https://h/x#top", "mailto:x@y", "ws://bridge:***@remote", "https://deploy-bot:***@h/x",
    "https://x-access-token:***@github.com/o/r", "redis://ghp_user:***@cache/0",
])
def test_left_as_it_is(text: str) -> None:
    assert mask_passwords(text) == text


@pytest.mark.parametrize("user", [
    # vendors' tokens whose prefix was known but whose shape was not: a JWT's dots, Atlassian's '=', letters only
    JWT, ATLASSIAN, HUGGING_FACE,
    # percent-encoded, read decoded
    GITHUB.replace("_", "%5F"), "%67%68%70%5F" + GITHUB[4:],
    # a raw '@' in the user: clients send all of it before the password as the user
    "ghp_abc@1", "alice@corp.example",
    # the other shapes, at their shortest
    "AKIAIOSFODNN7EXAMPLE", "ASIA" + "Q" * 16, "ghp_" + "x" * 30, "ghs_" + "a1" * 15,
    "github_pat_11ABCDEFG0123456789_ab", "glpat-" + "x" * 20, "xoxp-12345-6789", "sk-proj-" + "aB3" * 8,
    "sk-ant-api03-" + "Z" * 12,
    "sk_live_" + "4eC39HqLyjWDarjt", "rk_test_" + "0" * 16, "ya29." + "a0AfH6SMB" * 3, "hf_" + "1" * 30,
    "0123456789abcdef" * 2, "0" * 40, "npm_" + "a1B2c3D4e5" * 3 + "F6", "pypi-AgEIcHlwaS5vcmcCJDUw" + "-x9" * 4,
])
def test_a_token_beside_a_password_is_masked(user: str) -> None:
    assert mask_passwords(f"clone https://{user}:x-oauth-basic@h/o/r") == "clone https://***:***@h/o/r"


@pytest.mark.parametrize("user", [
    # a UUID client id, hyphenated or underscored service names, names that start like a vendor's prefix
    "123e4567-e89b-12d3-a456-426614174000", "svc-payments-reconciliation-2024", "svc_payments_reconciliation_2024",
    "ASIAPAC-ops", "AKIAN", "sk-team", "ghr_backup", "ghp_t0k", "hf_bot", "eyJohn", "ATATTendance",
    # one short of each vendor's length (or one over AWS's); 31 hex digits; 32+ letters without digits; a
    # percent-encoded e-mail address
    "ghp_" + "x" * 29, "AKIA" + "Q" * 15, "AKIA" + "Q" * 17, "glpat-" + "x" * 19, "xoxb-123456789",
    "sk_live_" + "a" * 15, ("0123456789abcdef" * 2)[:31], "serviceaccountfornightlybuildsonly",
    "service-account-for-nightly-builds-2024", "alice%40corp.example",
])
def test_a_user_name_beside_a_password_stays(user: str) -> None:
    text = f"https://{user}:pw@h/x"
    assert mask_passwords(text) == f"https://{user}:***@h/x"


@pytest.mark.parametrize("text", [
    "https://" + "a@" * 100_000, "git+https://" * 20_000, "a+" * 100_000 + "https://x@h/",
    "?" + "%" * 200_000 + "=", "?" + "a[" * 100_000 + "=x", "?token=" + "'" * 200_000 + "x",
    "?token=" + "')" * 100_000, "#token=a" * 25_000, "&token=" * 30_000, "?" + "a" * 200_000 + "password=",
    "https://" + "a" * 200_000 + ":***@", "https://a:***@" * 20_000, "https://" + "1a" * 100_000 + ":***@h",
    # the token test on long users: runs that almost make a token, dots of a JWT, percent escapes, raw '@'
    "https://" + "1a" * 100_000 + "!:***@h", "https://" + "a-" * 100_000 + ":***@h",
    "https://" + ("a" * 19 + "-") * 10_000 + "1:***@h", "https://" + ("a" * 18 + "1-") * 10_000 + ":***@h",
    "https://" + ("1" * 19 + "_") * 10_000 + ":***@h",
    "https://eyJ" + "a." * 100_000 + ":***@h", "https://eyJa.b." + "." * 200_000 + ":***@h",
    "https://" + "%41" * 70_000 + ":***@h", "https://" + "%" * 200_000 + ":***@h", "https://a@" * 20_000 + ":x@h",
    "https://ghp_" + "a" * 200_000 + "-:***@h", "https://ATATT" + "=" * 200_000 + ".:***@h",
    "https://AKIA" + "A" * 200_000 + ":***@h",
])
def test_masking_time_is_linear(text: str) -> None:
    begin = time.process_time()  # (CPU time: a loaded machine's wall clock failed it, at 0.33 s of CPU)
    mask_passwords(text)
    assert time.process_time() - begin < 1.0, text[:20]


def test_a_resolved_auth_never_shows_its_secret_in_its_repr() -> None:
    # The secret read from the engine's environment for an HTTP function's auth: its repr showed it, so any log line
    # or error quoting the auth would have.
    from iii_engine.modules.http.security import ResolvedAuth

    auth = ResolvedAuth("bearer", "s3cret-token")
    assert "s3cret" not in repr(auth) and "bearer" in repr(auth)
    assert auth.header_for("0", b"") == ("Authorization", "Bearer s3cret-token")


def test_a_header_line_put_in_the_name_is_refused_without_its_value() -> None:
    # Before: the whole name was quoted, "Authorization: Bearer s3cr3t" and its token with it.
    import pytest

    from iii_engine.modules.base import EngineError
    from iii_engine.modules.http.functions import _check_field

    with pytest.raises(EngineError) as info:
        _check_field("f", "invocation.headers", "Authorization: Bearer s3cr3t", "")
    assert "s3cr3t" not in str(info.value) and "'Authorization' then ':'" in str(info.value)


def test_more_key_names_are_secret() -> None:
    from iii._cli import mask_passwords

    shown = mask_passwords("https://h/x?subscription-key=a&dd-api-key=b&application_key=c&app_key=d&license_key=e"
                           "&consumer_key=f&secretAccessKey=g&sslkey=/etc/k&keyspace=ks")
    assert shown == ("https://h/x?subscription-key=***&dd-api-key=***&application_key=***&app_key=***&license_key=***"
                     "&consumer_key=***&secretAccessKey=***&sslkey=/etc/k&keyspace=ks")
