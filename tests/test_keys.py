"""The key rules and the safe-key mapping (pure logic, no server)."""

from __future__ import annotations

import pytest

from mcpool import InvalidKey, safe_key, validate_key
from mcpool.keys import MAX_KEY_LENGTH, validate_keys, validate_prefix

VALID = [
    "a",
    b"a",
    "user:42:profile",
    "!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "x" * 250,
    b"x" * 250,
    "%41",  # a percent sign is a plain key character
]


@pytest.mark.parametrize("key", VALID, ids=repr)
def test_valid_keys_pass(key: str | bytes) -> None:
    validate_key(key)


class Text(str):
    pass


def test_str_subclasses_are_checked_like_str() -> None:
    validate_key(Text("fine"))
    with pytest.raises(InvalidKey, match="space"):
        validate_key(Text("not fine"))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("a b", r"a space \(0x20\) at index 1"),
        (b"a b", r"a space \(0x20\) at byte 1"),
        ("a\tb", r"control character '\\t' \(0x09\) at index 1"),
        ("a\r\nb", r"'\\r' \(0x0D\) at index 1"),
        (b"a\x00b", r"'\\x00' \(0x00\) at byte 1"),
        ("a\x7f", r"DEL \(0x7F\) at index 1"),
        ("café", r"non-ASCII character 'é' \(0xC3 0xA9\) at index 3"),
        (b"caf\xc3\xa9", r"non-ASCII byte 0xC3 at byte 3"),
        ("", r"it is empty"),
        (b"", r"it is empty"),
        ("x" * 251, r"251 bytes after UTF-8 encoding, over the limit of 250"),
        ("é" * 126, r"252 bytes after UTF-8 encoding.*non-ASCII character"),
        ("\ud800", r"lone surrogate '\\ud800' at index 0"),
        (None, r"must be str or bytes, not NoneType"),
        (42, r"must be str or bytes, not int"),
        (bytearray(b"ab"), r"must be str or bytes, not bytearray"),
    ],
    ids=repr,
)
def test_invalid_keys_say_what_and_where(key: object, message: str) -> None:
    with pytest.raises(InvalidKey, match=message):
        validate_key(key)


def test_invalid_key_is_a_value_error_reported_as_mcpool() -> None:
    with pytest.raises(ValueError) as info:
        validate_key("a b")
    assert type(info.value).__module__ == "mcpool"
    assert "mcpool.safe_key()" in str(info.value)


def test_prefix_length_counts_toward_the_limit() -> None:
    validate_key("x" * 248, prefix_length=2)
    with pytest.raises(InvalidKey, match="251 bytes with the 3-byte prefix"):
        validate_key("x" * 248, prefix_length=3)


def test_long_keys_are_shortened_in_the_message() -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key("k" * 1000)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("prefix", [None, "", b"", "p:", b"p:", "x" * 249])
def test_prefixes_that_leave_room_are_valid(prefix: str | bytes | None) -> None:
    assert validate_prefix(prefix) == len(prefix or "")


@pytest.mark.parametrize("prefix", ["a b", "p\n", "é", "x" * 250, 7])
def test_bad_prefixes_are_rejected(prefix: object) -> None:
    with pytest.raises(InvalidKey, match="key_prefix"):
        validate_prefix(prefix)


TEXTS = [
    "",
    "plain",
    "a b",
    "/wiki/Café au lait?x=1&y=2",
    "foo\r\nset injected 0 0 8\r\nINJECTED",
    "\x00\x01\x7f",
    "\ud800 lone surrogate",
    "é" * 400,
    "%41",
]


@pytest.mark.parametrize("text", TEXTS, ids=repr)
def test_safe_key_always_gives_a_valid_key(text: str) -> None:
    key = safe_key(text)
    validate_key(key)
    assert len(key) <= MAX_KEY_LENGTH
    assert safe_key(text) == key


def test_safe_key_is_stable_across_runs() -> None:
    # Pinned: keys must not change between processes or releases, or every
    # deployment would start with a cold cache.
    assert safe_key("/wiki/Café au lait") == (
        "/wiki/Caf%C3%A9%20au%20lait~b36dc901304e41bd0b9443ed91ce249a"
    )


def test_safe_key_keeps_distinct_texts_apart() -> None:
    texts = ["a b", "a_b", "a%20b", "A b", "a b ", b"a b".decode()] + TEXTS
    keys = {safe_key(text) for text in set(texts)}
    assert len(keys) == len(set(texts))


def test_safe_key_output_never_equals_a_different_input() -> None:
    # A valid key is not passed through: an attacker who sends the mapped
    # form of someone else's text gets a different key.
    mapped = safe_key("a b")
    assert safe_key(mapped) != mapped


def test_safe_key_treats_str_and_its_utf8_bytes_alike() -> None:
    assert safe_key("é") == safe_key("é".encode())


def test_safe_key_respects_prefix_and_max_length() -> None:
    key = safe_key("é" * 300, prefix="page:", max_length=200)
    assert key.startswith("page:")
    assert len(key) == 200
    validate_key(key, prefix_length=50)


def test_safe_key_rejects_a_bad_prefix_or_no_room() -> None:
    with pytest.raises(InvalidKey, match="prefix"):
        safe_key("x", prefix="a b")
    with pytest.raises(ValueError, match="no room"):
        safe_key("x", max_length=20)
    with pytest.raises(TypeError):
        safe_key(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["ok", "a b"], "'a b'.*space"),
        (["ok", ""], "'' .*empty"),
        (["ok", b"b\n"], r"b'b\\n'.*0x0A"),
        (["ok", None], "NoneType"),
        (["ok", "x" * 249], "251 bytes with the 2-byte prefix"),
        (["ok", "café"], "non-ASCII character 'é'"),
    ],
    ids=repr,
)
def test_validate_keys_finds_the_bad_key(keys: list[object], message: str) -> None:
    with pytest.raises(InvalidKey, match=message):
        validate_keys(keys, prefix_length=2)


@pytest.mark.parametrize(
    "keys", [[], ["a", "b"], [b"a", "b"], [b"x" * 248], ["x" * 248, "y"]], ids=repr
)
def test_validate_keys_passes_valid_keys(keys: list[str | bytes]) -> None:
    validate_keys(keys, prefix_length=2)


class LyingText(str):
    def isascii(self) -> bool:
        return True

    def isprintable(self) -> bool:
        return True

    def __contains__(self, item: object) -> bool:
        return False

    def __len__(self) -> int:
        return 1

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter("ok")

    def encode(self, *args: object, **kwargs: object) -> bytes:
        return b"ok"


class LyingBytes(bytes):
    def isascii(self) -> bool:
        return True

    def decode(self, *args: object, **kwargs: object) -> str:
        return "ok"

    def __contains__(self, item: object) -> bool:
        return False

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    "key",
    [
        LyingText("x\r\nset injected 0 0 1\r\nZ"),
        LyingText("a b"),
        EMPTY_TEXT := LyingText(""),
        LyingText("x" * 251),
        LyingBytes(b"x\r\nset injected 0 0 1\r\nZ"),
        EMPTY_BYTES := LyingBytes(b""),
        LyingBytes(b"x" * 251),
    ],
    ids=lambda key: type(key).__name__,
)
def test_subclass_methods_cannot_vouch_for_a_key(key: str | bytes) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)
    with pytest.raises(InvalidKey):
        validate_keys(["ok", key])
    with pytest.raises(InvalidKey):
        validate_keys([key] * 3)
    if key is not EMPTY_TEXT and key is not EMPTY_BYTES:  # no prefix is fine
        with pytest.raises(InvalidKey):
            validate_prefix(key)
