"""Dataclass configurations that serialise to JSON-ready dicts and back."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

T = TypeVar("T", bound="Config")


class Config:
    """Mixin for dataclass configs: `to_dict()` and a `from_dict()` that ignores keys it
    does not know (so older files and other configs' keys load)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})
