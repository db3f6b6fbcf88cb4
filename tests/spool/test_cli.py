"""`webhook-gateway spool ...` as a real process, against the database of a running gateway."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import yaml

from tests.support.env import ENV, ROOT_DIR, TG_SECRET
from tests.support.inprocess import base_config, post, route, running_gateway, tg_verify
from tests.support.process import free_port
from tests.support.spool import FAST_SPOOL, eventually, rows
from tests.support.upstream import recording_upstream

TG = {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET}


async def spool_cmd(config: Path, *args: str) -> tuple[int, bytes, str]:
    # Not subprocess.run: the gateway under test runs on this event loop and must keep serving.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "spool",
        "--config",
        str(config),
        *args,
        cwd=ROOT_DIR,
        env={"PATH": "/usr/bin:/bin"},  # no secrets: the spool command needs none
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err.decode()


async def test_list_show_retry_purge_while_the_gateway_runs(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    down = f"http://127.0.0.1:{free_port()}/webhook"
    async with recording_upstream(status=400) as up:
        conf = base_config(
            [
                route("refusing", upstream=up.url, delivery="spool", verify=tg_verify()),
                route("down", upstream=down, delivery="spool"),
            ],
            spool={"path": str(db), "max_attempts": 1, **FAST_SPOOL},
        )
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump(conf))
        async with running_gateway(conf, ENV) as gw:
            refused = b'{"update_id":1,"text":"\xc3\xa9"}'
            assert (await post(gw.base + "/hook/refusing", refused, TG))[0] == 200
            for i in range(3):
                assert (await post(gw.base + "/hook/down", b'{"update_id":%d}' % (10 + i)))[0] == 200
            await eventually(lambda: len(rows(db, "dead")) == 1, what="dead-lettered")
            [(dead_id, *_)] = rows(db, "dead")

            code, out, _ = await spool_cmd(config, "list")
            assert code == 0
            assert out.decode().splitlines()[-1] == "3 pending row(s)"
            code, out, _ = await spool_cmd(config, "list", "--json", "--route", "down")
            listed = [json.loads(line) for line in out.splitlines()]
            assert [r["route"] for r in listed] == ["down"] * 3
            assert listed[0]["id"] < listed[1]["id"] < listed[2]["id"]  # oldest first
            code, out, _ = await spool_cmd(config, "list", "--dead")
            assert code == 0 and "upstream answered 400" in out.decode()

            code, out, _ = await spool_cmd(config, "show", str(dead_id))
            shown = json.loads(out)
            assert (code, shown["state"], shown["route"]) == (0, "dead", "refusing")
            assert shown["body"] == refused.decode()
            # The sender's secret token is stored (the upstream gets it) but never printed.
            assert TG_SECRET not in out.decode()
            assert ["X-Telegram-Bot-Api-Secret-Token", "<redacted>"] in shown["headers"]
            code, out, _ = await spool_cmd(config, "show", str(dead_id), "--body")
            assert (code, out) == (0, refused)
            code, _, err = await spool_cmd(config, "show", "999999")
            assert code == 1 and "no row 999999" in err

            # The bot is fixed: the dead letter goes back and is delivered.
            up.status = 200
            code, out, _ = await spool_cmd(config, "retry", str(dead_id))
            assert (code, out) == (0, b"1 row(s) queued for delivery now\n")
            await eventually(lambda: rows(db, "dead") == [], what="retried row left the dead letters")
            await eventually(lambda: [r.body for r in up.received][-1:] == [refused], what="delivered")
            await eventually(lambda: [r[1] for r in rows(db)] == ["down"] * 3, what="row deleted")

            code, _, err = await spool_cmd(config, "purge", "--route", "down")
            assert code == 2 and "--yes" in err
            assert len(rows(db)) == 3
            code, out, _ = await spool_cmd(config, "purge", "--route", "down", "--yes")
            assert (code, out) == (0, b"3 pending row(s) deleted\n")
            assert rows(db) == []
            assert (await post(gw.base + "/hook/down", b'{"update_id":99}'))[0] == 200  # still serving


async def test_dead_letters_purge_and_a_missing_database(tmp_path: Path) -> None:
    db = tmp_path / "spool.db"
    async with recording_upstream(status=404) as up:
        conf = base_config(
            [route(upstream=up.url, delivery="spool")],
            spool={"path": str(db), "max_attempts": 1, **FAST_SPOOL},
        )
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml.safe_dump(conf))
        async with running_gateway(conf) as gw:
            for i in range(2):
                assert (await post(gw.base + "/hook/bot", b"%d" % i))[0] == 200
            await eventually(lambda: len(rows(db, "dead")) == 2, what="dead-lettered")
            code, out, _ = await spool_cmd(config, "purge", "--dead")
            assert (code, out) == (0, b"2 dead letter row(s) deleted\n")
            assert rows(db, "dead") == []
    missing = tmp_path / "other.yaml"
    missing.write_text(yaml.safe_dump({**conf, "spool": {"path": str(tmp_path / "nope.db")}}))
    code, _, err = await spool_cmd(missing, "list")
    assert code == 1 and "no spool database here" in err
    assert not (tmp_path / "nope.db").exists()  # the command never creates one
