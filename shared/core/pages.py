"""The one shape of every list answer, and the limits every list route shares.

A page is `{"object": "list", "data": [...], "has_more", "next_cursor"}`: pass `next_cursor` as
`after` for the next page; it is null exactly on the last page. Lists that follow OpenAI's objects
(files, batches) also carry `first_id` and `last_id`, as OpenAI's SDK reads them; there the cursor
is the last item's id, which is what the SDK sends as `after`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Generic, Literal, TypeVar

from msgspec import Struct

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


class Page(Struct, Generic[T], kw_only=True):
    """A page of a list, in the list's documented order."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    next_cursor: str | None


class OpenAIPage(Page[T], Generic[T], kw_only=True):
    """A page of an OpenAI-shaped list: the same, plus the ids of its first and last items."""

    first_id: str | None
    last_id: str | None


def page_of(fetched: Sequence[T], limit: int, cursor_of: Callable[[T], str]) -> Page[T]:
    """The page made of up to `limit + 1` items read in order: one more than `limit` means more follow."""
    data = list(fetched[:limit])
    more = len(fetched) > limit
    return Page(data=data, has_more=more, next_cursor=cursor_of(data[-1]) if more and data else None)


def openai_page_of(fetched: Sequence[T], limit: int, id_of: Callable[[T], str]) -> OpenAIPage[T]:
    """`page_of` with `first_id` and `last_id`; the cursor is the last item's id."""
    plain = page_of(fetched, limit, id_of)
    data = plain.data
    return OpenAIPage(
        data=data,
        has_more=plain.has_more,
        next_cursor=plain.next_cursor,
        first_id=id_of(data[0]) if data else None,
        last_id=id_of(data[-1]) if data else None,
    )
