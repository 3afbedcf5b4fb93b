"""The body of every error answer."""

from __future__ import annotations

from pydantic import BaseModel

# -- errors -------------------------------------------------------------------------------------


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer: the status, a message a person can act on, and the input
    field at fault when there is one."""

    code: int
    message: str
    field: str | None = None
    errors: list[FieldError] | None = None
