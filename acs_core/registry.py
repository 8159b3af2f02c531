"""A tiny name -> factory registry, so a new data set, model, objective or selector is one file plus one line."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """Raised when a name is not registered; its message lists the valid names."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    description: str
    obj: T


class Registry(Generic[T]):
    """Maps names to objects (usually classes or factories) with a one-line description each."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str) -> Callable[[T], T]:
        """Decorator: `@REG.register("name", "what it is")` on a class or function."""

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, description, obj)
            return obj

        return add

    def get(self, name: str) -> T:
        """The object registered as `name`; an unknown name raises with the list of valid ones."""
        try:
            return self._entries[name].obj
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))
