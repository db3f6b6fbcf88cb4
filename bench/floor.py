"""The Python floor: uvloop + httptools answering a constant 401, no checks, no logging.

What any Python gateway on this stack pays per request before doing any work of its own;
the bench runs it beside the others so the gateway's ratios can be read against it.

    python bench/floor.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop

ANSWER = (
    b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n"
    b'{"error":"signature_mismatch"}'
)


class Floor(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self) -> None:
        self.transport.write(ANSWER)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Floor, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
