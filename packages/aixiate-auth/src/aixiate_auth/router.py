"""``/auth``: registration, login, tokens, sessions and password flows."""

from fastapi import APIRouter

router = APIRouter(prefix="/auth", tags=["auth"])
