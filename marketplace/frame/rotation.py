"""Trying several candidates (hosts, endpoints) in turn, starting with the
one that worked last: the database pools' hosts and the client library's
instances of a service."""

from typing import Generic, Iterator, List, Sequence, Tuple, TypeVar

T = TypeVar("T")


class Rotation(Generic[T]):
    """C{candidates} in the order to try them: from the current one (the
    one that worked last, at first the one at C{start}) round to the one
    before it."""

    def __init__(self, candidates: Sequence[T], start: int = 0) -> None:
        if not candidates:
            raise ValueError("nothing to try")
        self.candidates: List[T] = list(candidates)
        self.current = start % len(self.candidates)

    def __len__(self) -> int:
        return len(self.candidates)

    def in_turn(self) -> Iterator[Tuple[int, T]]:
        """Each candidate once, with its index, from the current one."""
        for step in range(len(self.candidates)):
            index = (self.current + step) % len(self.candidates)
            yield index, self.candidates[index]

    def worked(self, index: int) -> None:
        """The candidate at C{index} worked: start there next time."""
        self.current = index

    def advance(self) -> None:
        """The current candidate just failed: start with the next one."""
        self.current = (self.current + 1) % len(self.candidates)


__all__ = ["Rotation"]
