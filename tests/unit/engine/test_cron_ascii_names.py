"""Month and weekday names in a cron expression are ASCII, as its digits are.

Before, a name was looked up by ``str.upper()``, which folds some non-ASCII letters into ASCII ones: "sun" spelt
with a long s (U+017F) parsed as SUN, "sep" so as SEP, and "@weekly" with a Kelvin sign (U+212A) for its k as
``@weekly``.
"""

from __future__ import annotations

import pytest

from iii_engine.modules.cron.expr import CronExpression, CronSyntaxError


@pytest.mark.parametrize("expression, field", [
    ("0 0 0 * * \u017fun", "day-of-week"),
    ("0 0 0 * * MON-\u017fAT", "day-of-week"),
    ("0 0 0 1 \u017fep *", "month"),
    ("0 0 0 1 \u212aAN *", "month"),  # not a name either way: refused as before
])
def test_a_name_with_a_letter_that_upper_folds_into_ascii_is_refused(expression: str, field: str) -> None:
    with pytest.raises(CronSyntaxError, match=f"^{field}: .* is not a number$"):
        CronExpression.parse(expression)


def test_a_shortcut_with_a_kelvin_sign_is_not_a_shortcut() -> None:
    with pytest.raises(CronSyntaxError, match="expected 6 or 7 fields"):
        CronExpression.parse("@wee\u212aly")


def test_ascii_names_in_any_case_still_parse() -> None:
    assert CronExpression.parse("0 0 0 * * sun").weekdays == frozenset({0})
    assert CronExpression.parse("0 0 0 1 Sep *").months == frozenset({9})
    assert sorted(CronExpression.parse("@WEEKLY").weekdays) == [0]
