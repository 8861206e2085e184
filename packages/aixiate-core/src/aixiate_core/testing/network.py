"""Ports and TCP: what tests of backend outages and of other processes need."""

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import make_url


def free_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpProxy:
    """A TCP relay the test can cut and restore, standing in for a backend going down.

    Stopping closes the listener and every relayed connection, which is what clients
    see when PostgreSQL or Redis stops; the shared servers themselves stay untouched.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()
                self._writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def url_through(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parsed = make_url(url)
    return parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)


@asynccontextmanager
async def proxied(url: str, default_port: int) -> AsyncIterator[tuple[TcpProxy, str]]:
    """A started :class:`TcpProxy` to the server of ``url``, and ``url`` through it: the
    backend a test can cut and restore. The proxy is stopped when the block ends."""
    proxy = TcpProxy(*target_of(url, default_port))
    await proxy.start()
    try:
        yield proxy, url_through(url, proxy)
    finally:
        await proxy.stop()


def target_of(url: str, default_port: int) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or default_port
