"""Bodies every package's routes share, so a client sees one shape for each everywhere:
the problem body of every error, the 202 body, and the keyset page with its size bounds."""

from typing import Any

from pydantic import BaseModel, Field

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


class Page[T](BaseModel):
    """One page of a keyset-paginated list; pass ``next_cursor`` back for the next page,
    ``null`` means this was the last one."""

    items: list[T]
    next_cursor: str | None


class Accepted(BaseModel):
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details, the body of every error response."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str = Field(description="Stable snake_case machine code.")
    request_id: str | None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Validation errors only: loc, msg and type of each."
    )
