"""R-REST on a0783bb's batched channel ids and keys: every key character and every random UUID digit is uniform
(a translate-table bias would show as a chi-square far past its bound over 100k channels), the variant digit is
uniform over 8, 9, a, b, and a forked child never hands out an id its parent had ready."""

from __future__ import annotations

import collections
import os

from iii_engine.channels import registry

_KEY_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# chi-square quantiles at p = 1e-6 (a fair generator fails one position's check about once in a million runs per
# position): 63 degrees of freedom (64 key characters), 15 (16 hex digits), 3 (4 variant digits)
_CHI2_63, _CHI2_15, _CHI2_3 = 135.0, 55.0, 31.0


def _chi2(counts: collections.Counter[str], alphabet: str, total: int) -> float:
    expected = total / len(alphabet)
    return sum((counts.get(c, 0) - expected) ** 2 / expected for c in alphabet)


def test_key_characters_and_uuid_digits_are_uniform_over_100k_channels() -> None:
    registry._ready_ids.clear()
    n = 100_000
    triples = [registry._new_ids() for _ in range(n)]
    for index in (1, 2):  # writer and reader keys
        for pos in range(32):
            counts = collections.Counter(t[index][pos] for t in triples)
            assert set(counts) <= set(_KEY_ALPHABET)
            assert _chi2(counts, _KEY_ALPHABET, n) < _CHI2_63, (index, pos, counts)
    random_digits = [p for p in range(36) if p not in (8, 13, 14, 18, 19, 23)]
    for pos in random_digits:
        counts = collections.Counter(t[0][pos] for t in triples)
        assert _chi2(counts, "0123456789abcdef", n) < _CHI2_15, (pos, counts)
    variants = collections.Counter(t[0][19] for t in triples)
    assert _chi2(variants, "89ab", n) < _CHI2_3, variants
    assert {t[0][14] for t in triples} == {"4"}
    assert len({value for t in triples for value in t}) == 3 * n


def test_a_forked_child_never_hands_out_an_id_its_parent_had_ready() -> None:
    registry._ready_ids.clear()
    registry._new_ids()
    ready = {t[0] for t in registry._ready_ids}
    assert ready
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its first id and leave without running the parent's cleanup
        try:
            os.write(write_end, registry._new_ids()[0].encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        child_id = pipe.read().decode()
    assert len(child_id) == 36 and child_id not in ready
