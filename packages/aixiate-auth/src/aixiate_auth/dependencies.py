"""Dependencies of the auth routes."""

from typing import Annotated

from fastapi import Depends, Request

from aixiate_auth.state import STATE_KEY, AuthState


def get_auth(request: Request) -> AuthState:
    auth: AuthState = getattr(request.state, STATE_KEY)
    return auth


AuthDep = Annotated[AuthState, Depends(get_auth)]
