"""Memcached key rules: what may reach the wire, and a mapping for everything else.

A key that :class:`mcpool.Client` sends is 1 to 250 bytes once UTF-8 encoded
and prefixed (``key_prefix`` of the ``*_multi`` calls, the ``namespace``
behaviour), and every byte is printable ASCII other than the space
(``0x21``-``0x7E``). In the text protocol anything else is either rejected
with an error that leaves the connection out of step, or worse: a key
containing ``\\r\\n`` smuggles a second command to the server. The rules are
checked before a request is built, for both protocols, so a key means the
same thing whichever protocol a deployment uses.

The checks read the characters or bytes themselves, never a method of the
key: a ``str`` or ``bytes`` subclass is first copied into a plain ``str`` or
``bytes`` with the base type's own code (its ``isprintable``, ``__len__``,
``__contains__`` or ``__class__`` may say anything), and that copy is what
:class:`mcpool.Client` checks and sends.

.. code-block:: python

    from mcpool.keys import safe_key, validate_key

    validate_key("user:42:profile")          # fine: returns None
    validate_key("user 42")                  # raises mcpool.InvalidKey
    key = safe_key("/wiki/Café au lait?x=1")  # any text -> a valid key
    # '/wiki/Caf%C3%A9%20au%20lait?x=1~8f6c...' (a readable part + a digest)

.. versionadded:: 0.1
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from .errors import InvalidKey

__all__ = [
    "MAX_KEY_LENGTH",
    "safe_key",
    "validate_key",
    "validate_keys",
    "validate_prefix",
    "wire_key",
    "wire_keys",
    "wire_prefix",
]

#: The longest key memcached accepts, in bytes, prefix included.
MAX_KEY_LENGTH = 250

#: Characters :func:`safe_key` keeps as they are: every valid key character
#: but ``%``, which starts an escape.
_KEPT = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")

#: Length of the hexadecimal digest :func:`safe_key` appends.
_DIGEST_CHARS = 32

_SHOWN = 40  # characters of a bad key quoted in an error message


#: A slice of the whole: ``bytes.__getitem__(key, _WHOLE)`` copies a bytes
#: subclass's own bytes into a plain ``bytes`` without calling its methods.
_WHOLE = slice(None)


def _plain(key: Any) -> str | bytes | None:
    """*key* as an object of exactly ``str`` or ``bytes``, or ``None``.

    ``type()`` and ``issubclass()`` read the real class, which a subclass
    cannot fake (``key.__class__`` and ``isinstance`` can be), and the copies
    are made by ``str``'s and ``bytes``' own code: no method of a subclass runs.
    """
    kind = type(key)
    if kind is str or kind is bytes:
        return key  # type: ignore[no-any-return]
    if issubclass(kind, str):
        return str.__str__(key)
    if issubclass(kind, bytes):
        return bytes.__getitem__(key, _WHOLE)
    return None


def _is_valid_text(key: str, limit: int) -> bool:
    # ASCII + printable + no space is exactly 0x21-0x7E, checked by three C
    # loops; for ASCII text the UTF-8 length is len(key).
    return (
        0 < len(key) <= limit and key.isascii() and key.isprintable() and " " not in key
    )


def _is_valid_bytes(key: bytes, limit: int) -> bool:
    return (
        0 < len(key) <= limit
        and key.isascii()
        and key.decode("ascii").isprintable()
        and b" " not in key
    )


def _shown(key: str | bytes) -> str:
    text = repr(key[:_SHOWN])
    return text + ("..." if len(key) > _SHOWN else "")


def _describe_byte(byte: int) -> str:
    if byte == 0x20:
        return "a space (0x20)"
    if byte == 0x7F:
        return "DEL (0x7F)"
    if byte < 0x20:
        return f"a control character {chr(byte)!r} (0x{byte:02X})"
    return f"a non-ASCII byte 0x{byte:02X}"


def _problems(key: str | bytes, raw: bytes, prefix_len: int) -> list[str]:
    problems = []
    total = len(raw) + prefix_len
    if not raw:
        problems.append("it is empty")
    elif total > MAX_KEY_LENGTH:
        with_prefix = f" with the {prefix_len}-byte prefix" if prefix_len else ""
        problems.append(
            f"it is {total} bytes{with_prefix} after UTF-8 encoding, "
            f"over the limit of {MAX_KEY_LENGTH}"
        )
    codes = list(key) if isinstance(key, bytes) else [ord(char) for char in key]
    for index, code in enumerate(codes):
        if 0x21 <= code <= 0x7E:
            continue
        if isinstance(key, bytes):
            problems.append(f"it has {_describe_byte(code)} at byte {index}")
        elif code > 0x7F:
            utf8 = " ".join(f"0x{b:02X}" for b in key[index].encode("utf-8"))
            problems.append(
                f"it has a non-ASCII character {key[index]!r} ({utf8}) at index {index}"
            )
        else:
            problems.append(f"it has {_describe_byte(code)} at index {index}")
        break
    return problems


def _explain(key: Any, limit: int, what: str = "key") -> InvalidKey:
    """Build the error for a key that failed the fast checks."""
    prefix_len = MAX_KEY_LENGTH - limit
    plain = _plain(key)
    if plain is None:
        return InvalidKey(
            f"{what} must be str or bytes, not {type(key).__name__} ({key!r:.60})"
        )
    key = plain
    if isinstance(key, str):
        try:
            raw = key.encode("utf-8")
        except UnicodeEncodeError as exc:
            return InvalidKey(
                f"{what} {_shown(key)} cannot be encoded as UTF-8: it has a lone "
                f"surrogate {key[exc.start]!r} at index {exc.start}; map such text "
                "with mcpool.safe_key()"
            )
    else:
        raw = key
    problems = _problems(key, raw, prefix_len) or ["it is not a valid key"]
    return InvalidKey(
        f"{what} {_shown(key)} is not a valid memcached key: "
        + "; ".join(problems)
        + ". Keys are 1-250 bytes of printable ASCII without spaces (0x21-0x7E), "
        "prefix included; map other text with mcpool.safe_key()"
    )


def validate_key(key: Any, prefix_length: int = 0) -> None:
    """Raise :class:`~mcpool.InvalidKey` unless *key* may be sent to memcached.

    :param key: a ``str`` (UTF-8 encoded, as pylibmc does) or ``bytes``; of
        a subclass, the characters or bytes it holds are checked, whatever
        its methods say.
    :param prefix_length: bytes that will be put in front of the key (a
        ``key_prefix`` or ``namespace``); they count toward the 250-byte
        limit.
    :raises mcpool.InvalidKey: with a message saying what is wrong and where:
        wrong type, empty, too long, or a byte outside ``0x21``-``0x7E``
        (space, control character, DEL, non-ASCII).

    >>> validate_key("user:42")
    >>> validate_key("user 42")
    Traceback (most recent call last):
      ...
    mcpool.InvalidKey: key 'user 42' is not a valid memcached key: it has a ...
    """
    wire_key(key, prefix_length)


def wire_key(key: Any, prefix_length: int = 0) -> str | bytes:
    """The key to send for *key*: a plain ``str`` or ``bytes`` that is valid.

    A plain ``str`` or ``bytes`` comes back as it is; a subclass comes back
    as a plain copy of its characters or bytes, checked: pass that to
    pylibmc, and what was checked is what is sent.

    :raises mcpool.InvalidKey: as :func:`validate_key`.

    .. versionadded:: 0.1
    """
    limit = MAX_KEY_LENGTH - prefix_length
    # The common case first, on the exact type: a few C calls.
    if type(key) is str:
        if 0 < len(key) <= limit and key.isascii() and key.isprintable():
            if " " not in key:
                return key
        raise _explain(key, limit)
    plain = key if type(key) is bytes else _plain(key)
    if type(plain) is str:
        if _is_valid_text(plain, limit):
            return plain
    elif type(plain) is bytes and _is_valid_bytes(plain, limit):
        return plain
    raise _explain(key, limit)


def validate_keys(keys: Sequence[Any], prefix_length: int = 0) -> None:
    """Check every key of a ``*_multi`` call, as :func:`validate_key` does.

    :raises mcpool.InvalidKey: for the first bad key, with the same message
        :func:`validate_key` gives.

    >>> validate_keys(["user:1", "user:2"], prefix_length=len("app:"))
    """
    wire_keys(keys, prefix_length)


def wire_keys(keys: Iterable[Any], prefix_length: int = 0) -> list[str | bytes]:
    """The keys to send for *keys*, each as :func:`wire_key` gives it.

    :raises mcpool.InvalidKey: for the first bad key.
    """
    if type(keys) is not list:
        keys = list(keys)  # one snapshot: what is checked is what is sent
    limit = MAX_KEY_LENGTH - prefix_length
    try:
        # One pass over all the keys instead of a call per key. join() and
        # split() read the characters of str subclasses too, never their
        # methods, and split() hands back plain copies. A space is not a key
        # character, so splitting gives back as many keys as went in exactly
        # when no key has a space.
        spaced = " ".join(keys)
    except TypeError:
        pass  # bytes or other types: one by one below
    else:
        parts: list[str | bytes] = spaced.split(" ")  # type: ignore[assignment]
        if (
            len(parts) == len(keys)
            and spaced.isascii()
            and spaced.isprintable()
            and "" not in parts
            and (len(spaced) <= limit or max(map(len, parts)) <= limit)
        ):
            return parts
    return [wire_key(key, prefix_length) for key in keys]


def validate_prefix(prefix: Any, what: str = "key_prefix") -> int:
    """Check a key prefix and return its length in bytes.

    An empty prefix (or ``None``) is allowed and has length 0; otherwise the
    prefix follows the key rules.

    :raises mcpool.InvalidKey: if the prefix has a byte outside
        ``0x21``-``0x7E`` or is longer than 249 bytes (a key of at least one
        byte must still fit).
    """
    return len(wire_prefix(prefix, what))


def wire_prefix(prefix: Any, what: str = "key_prefix") -> str | bytes:
    """The prefix to send for *prefix*, as :func:`wire_key` gives keys;
    ``""`` for ``None`` or an empty prefix.

    :raises mcpool.InvalidKey: as :func:`validate_prefix`.
    """
    if prefix is None:
        return ""
    plain = _plain(prefix)
    if plain is not None and not plain:
        return plain
    if type(plain) is str and _is_valid_text(plain, MAX_KEY_LENGTH - 1):
        return plain
    if type(plain) is bytes and _is_valid_bytes(plain, MAX_KEY_LENGTH - 1):
        return plain
    raise _explain(prefix, MAX_KEY_LENGTH - 1, what)


def safe_key(
    text: str | bytes, *, prefix: str = "", max_length: int = MAX_KEY_LENGTH
) -> str:
    """Map any text to a valid memcached key, deterministically.

    The key is *prefix*, then a readable form of *text* (characters outside
    ``0x21``-``0x7E`` and ``%`` percent-escaped from their UTF-8 bytes, cut to
    fit), then ``~`` and a 128-bit BLAKE2b digest of the whole *text*. The
    digest is always there, even when *text* is a valid key already: an
    attacker who controls *text* (a URL path, a user name) cannot pick a
    value that lands on another value's key, since that takes a digest
    collision. Equal text gives the same key in every process and release.

    :param text: any ``str`` (lone surrogates included) or ``bytes``;
        ``"é"`` and ``b"\\xc3\\xa9"`` give the same key.
    :param prefix: put in front, unchanged; it must follow the key rules.
    :param max_length: the longest key to return; lower it by the length of
        a ``key_prefix`` or ``namespace`` the key will get.
    :raises mcpool.InvalidKey: if *prefix* is not valid.
    :raises ValueError: if *max_length* leaves no room for the digest.

    >>> safe_key("/wiki/Café au lait")
    '/wiki/Caf%C3%A9%20au%20lait~...'
    """
    if not isinstance(text, (str, bytes)):
        raise TypeError(f"text must be str or bytes, not {type(text).__name__}")
    prefix_len = validate_prefix(prefix, "prefix")
    room = max_length - prefix_len - 1 - _DIGEST_CHARS
    if room < 0 or max_length > MAX_KEY_LENGTH:
        raise ValueError(
            f"max_length={max_length} with a {prefix_len}-byte prefix leaves no "
            f"room for the {_DIGEST_CHARS + 1}-character digest; it must be "
            f"between {prefix_len + 1 + _DIGEST_CHARS} and {MAX_KEY_LENGTH}"
        )
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    digest = hashlib.blake2b(raw, digest_size=_DIGEST_CHARS // 2).hexdigest()
    readable = quote(raw, safe=_KEPT)[:room]
    return f"{prefix}{readable}~{digest}"
