"""Signing-key rotation, the operator's ``aixiate keys rotate``."""

from aixiate_core.crypto import SecretBox
from aixiate_core.db import utc_now
from sqlmodel.ext.asyncio.session import AsyncSession

from aixiate_auth.keys import generate_key
from aixiate_auth.models import SigningKey
from aixiate_auth.repository import SigningKeyRepository


async def rotate(session: AsyncSession, box: SecretBox) -> SigningKey:
    """Makes a new signing key active and retires the current ones (they keep verifying
    until their last tokens expire)."""
    keys = SigningKeyRepository(session)
    now = utc_now()
    latest = await keys.latest_generation()
    for active in await keys.active():
        active.retired_at = now
        session.add(active)
    key = generate_key(box, generation=latest + 1)
    await keys.add(key)
    return key
