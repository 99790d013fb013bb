from collections.abc import Iterable, Mapping
from typing import Any

from typing_extensions import Self

_Key = str | bytes

class Client:
    addresses: list[str]
    binary: bool
    def __init__(
        self,
        servers: Iterable[str],
        behaviors: Mapping[str, Any] | None = None,
        binary: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None: ...
    def clone(self) -> Self: ...
    def get_behaviors(self) -> dict[str, Any]: ...
    def set_behaviors(self, behaviors: Mapping[str, Any]) -> Any: ...
    @property
    def behaviors(self) -> dict[str, Any]: ...
    @behaviors.setter
    def behaviors(self, behaviors: Mapping[str, Any]) -> None: ...
    def get(self, key: _Key, default: Any = None) -> Any: ...
    def gets(self, key: _Key) -> tuple[Any, Any]: ...
    def get_multi(
        self, keys: Iterable[_Key], key_prefix: _Key | None = None
    ) -> dict[Any, Any]: ...
    def set(
        self,
        key: _Key,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool: ...
    def add(
        self,
        key: _Key,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool: ...
    def replace(
        self,
        key: _Key,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool: ...
    def append(
        self,
        key: _Key,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool: ...
    def prepend(
        self,
        key: _Key,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> bool: ...
    def cas(self, key: _Key, val: Any, cas: int, time: int = 0) -> bool: ...
    def delete(self, key: _Key) -> bool: ...
    def touch(self, key: _Key, time: int) -> bool: ...
    def incr(self, key: _Key, delta: int = 1) -> int: ...
    def decr(self, key: _Key, delta: int = 1) -> int: ...
    def set_multi(
        self,
        mapping: Mapping[Any, Any],
        time: int = 0,
        key_prefix: _Key | None = None,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> list[Any]: ...
    def add_multi(
        self,
        mapping: Mapping[Any, Any],
        time: int = 0,
        key_prefix: _Key | None = None,
        min_compress_len: int = 0,
        compress_level: int = -1,
    ) -> list[Any]: ...
    def delete_multi(
        self, keys: Iterable[_Key], key_prefix: _Key | None = None
    ) -> bool: ...
    def incr_multi(
        self,
        keys: Iterable[_Key],
        key_prefix: _Key | None = None,
        delta: int = 1,
    ) -> None: ...
    def flush_all(self, time: int = 0) -> bool: ...
    def get_stats(
        self, args: str | None = None
    ) -> list[tuple[bytes, dict[str, Any]]]: ...
    def disconnect_all(self) -> None: ...
    def hash(self, key: _Key) -> int: ...
    def serialize(self, value: Any) -> tuple[bytes, int]: ...
    def deserialize(self, value: bytes, flags: int) -> Any: ...
    def __getitem__(self, key: _Key) -> Any: ...
    def __setitem__(self, key: _Key, value: Any) -> None: ...
    def __delitem__(self, key: _Key) -> None: ...
    def __contains__(self, key: _Key) -> bool: ...
