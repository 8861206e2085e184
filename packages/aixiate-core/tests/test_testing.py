"""The shared test helpers that other tests lean on without noticing when they break."""

from pathlib import Path

from aixiate_core.testing import postgres_server_url, scratch_database, table_names
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine


async def _exists_on_server(server: str, name: str) -> bool:
    engine = create_async_engine(server)
    try:
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            return found.first() is not None
    finally:
        await engine.dispose()


class TestScratchDatabase:
    async def test_fresh_empty_and_gone_afterwards(self, tmp_path: Path) -> None:
        async with scratch_database(tmp_path, "aixiate_probe") as url:
            name = make_url(url).database or ""
            assert await table_names(url) == []
            async with scratch_database(tmp_path, "aixiate_probe") as other:
                assert other != url

        assert "aixiate_probe_" in name
        server = postgres_server_url()
        if server is not None:
            assert not await _exists_on_server(server, name)
