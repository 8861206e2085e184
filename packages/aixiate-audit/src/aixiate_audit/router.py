"""``/audit``: the admin's view of the audit log (query API and verification build on it)."""

from fastapi import APIRouter

router = APIRouter(prefix="/audit", tags=["audit"])
