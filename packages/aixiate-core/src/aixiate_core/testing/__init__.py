"""Test helpers every package's tests share; the fixtures are in :mod:`.plugin`, which
pytest loads through the ``aixiate`` entry point."""

from aixiate_core.testing.clock import FakeClock
from aixiate_core.testing.db import (
    Sessions,
    create_database,
    create_schema,
    delete_prefixed,
    drop_database,
    forget_prefixed,
    postgres_server_url,
    redis_server_url,
    scratch_database,
    table_names,
)
from aixiate_core.testing.fakes import FakeResend, ResendCall
from aixiate_core.testing.http import assert_problem, bearer, serve, serve_from
from aixiate_core.testing.network import TcpProxy, free_port, proxied, target_of, url_through
from aixiate_core.testing.plugin import RUN_ID, RUN_SECRET
from aixiate_core.testing.principals import MintedTokens

__all__ = [
    "RUN_ID",
    "RUN_SECRET",
    "FakeClock",
    "FakeResend",
    "MintedTokens",
    "ResendCall",
    "Sessions",
    "TcpProxy",
    "assert_problem",
    "bearer",
    "create_database",
    "create_schema",
    "delete_prefixed",
    "drop_database",
    "forget_prefixed",
    "free_port",
    "postgres_server_url",
    "proxied",
    "redis_server_url",
    "scratch_database",
    "serve",
    "serve_from",
    "table_names",
    "target_of",
    "url_through",
]
