"""The bot behind the gateway in a soak run: it answers every update 200 and appends its
`update_id` to a file, one per line, *before* it answers.

Written with `os.write` on an `O_APPEND` descriptor, so a line is in the kernel's page cache
before the gateway sees the 2xx: a bot killed at any instant (SIGKILL included) never answered an
update it did not record. The driver kills it and starts it again on the same port, appending to
the same file.

    python bench/soakbot.py --port 3000 --out delivered.txt
"""

from __future__ import annotations

import argparse
import json
import os

from aiohttp import web


def make_app(fd: int) -> web.Application:
    async def webhook(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            update_id = json.loads(body)["update_id"]
        except (ValueError, KeyError, TypeError):
            return web.json_response({"ok": False}, status=400)
        if not isinstance(update_id, int):
            return web.json_response({"ok": False}, status=400)
        os.write(fd, b"%d\n" % update_id)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/webhook", webhook)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", required=True, help="file the update_ids are appended to")
    args = parser.parse_args()
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    # asyncio sets SO_REUSEADDR: a restarted bot binds the same port at once.
    web.run_app(make_app(fd), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
