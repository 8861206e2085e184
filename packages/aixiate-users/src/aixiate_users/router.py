"""``/users``: self-service profile routes and admin user management."""

from fastapi import APIRouter

router = APIRouter(prefix="/users", tags=["users"])
