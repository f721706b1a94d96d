"""Registrar bindings shared through the records database (`SharedBindings`): two
workers' registrars on one SQLite file, and on a private PostgreSQL, see each
other's registrations, refreshes and removals; a worker started later reads
the live bindings; Path and expiry survive the trip."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from mediaserver.call.bindings import SharedBindings
from mediaserver.call.databases import Database, PostgresDatabase, SqliteDatabase
from mediaserver.sip.registrar import Registrar
from mediaserver.sip.transaction import Target
from tests.sip.test_registrar import PATH, register

KAMAILIO = Target("udp", "127.0.0.1", 5060)
INTERVAL = 0.05


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _two_workers_share(make_database: Callable[[], Database]) -> None:
    loop = asyncio.get_running_loop()
    now = loop.time
    one, two = Registrar(), Registrar()
    shared = [SharedBindings(make_database(), reg, loop, INTERVAL) for reg in (one, two)]
    for worker in shared:
        worker.start()
    try:
        request = register("<sip:alice@10.0.0.5:5070>", expires="600", extra=(f"Path: {PATH}",))
        assert one.register(request, "alice", KAMAILIO, now()).status == 200
        assert await _until(lambda: bool(two.lookup("alice", now())))
        (there,) = two.lookup("alice", now())
        (here,) = one.lookup("alice", now())
        assert there.contact == here.contact and there.path == (PATH,)
        assert there.source == KAMAILIO and (there.call_id, there.cseq) == ("reg1", 1)
        assert abs(there.expires_at - here.expires_at) < 0.5
        assert two.known_source(KAMAILIO.host, now())

        # The refresh arrives at the other worker (round robin): it knows the
        # binding, so the order check holds there, and the first hears of it.
        stale = register("<sip:alice@10.0.0.5:5070>", expires="600")
        assert two.register(stale, "alice", KAMAILIO, now()).status == 500  # same CSeq
        refresh = register("<sip:alice@10.0.0.5:5070>", cseq=2, expires="3600")
        assert two.register(refresh, "alice", KAMAILIO, now()).status == 200
        assert await _until(lambda: one.lookup("alice", now())[0].cseq == 2)
        assert one.lookup("alice", now())[0].expires_at > here.expires_at + 2000

        # A worker started afterwards reads the live bindings at once.
        late = Registrar()
        shared.append(SharedBindings(make_database(), late, loop, INTERVAL))
        shared[-1].start()
        assert await _until(lambda: bool(late.lookup("alice", now())))

        # Removed on the first worker: gone everywhere, and stays gone.
        removal = register("<sip:alice@10.0.0.5:5070>;expires=0", cseq=3)
        assert one.register(removal, "alice", KAMAILIO, now()).status == 200
        assert await _until(
            lambda: not two.lookup("alice", now()) and not late.lookup("alice", now())
        )
        await asyncio.sleep(5 * INTERVAL)  # re-reads of older rows change nothing
        assert not two.lookup("alice", now()) and not late.lookup("alice", now())
    finally:
        for worker in shared:
            worker.close()


def test_two_workers_share_bindings_through_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    asyncio.run(asyncio.wait_for(_two_workers_share(lambda: SqliteDatabase(path)), 60))


def test_two_workers_share_bindings_through_postgres(postgres_dsn: str) -> None:
    asyncio.run(asyncio.wait_for(_two_workers_share(lambda: PostgresDatabase(postgres_dsn)), 60))


def test_an_unreadable_database_keeps_the_change_and_the_registrar_goes_on(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        registrar = Registrar()
        bad = tmp_path / "garbage.db"
        bad.write_bytes(b"not a database" * 400)
        shared = SharedBindings(SqliteDatabase(bad), registrar, loop, INTERVAL)
        shared.start()
        try:
            request = register("<sip:alice@10.0.0.5:5070>")
            assert registrar.register(request, "alice", KAMAILIO, loop.time()).status == 200
            await asyncio.sleep(10 * INTERVAL)
            assert registrar.lookup("alice", loop.time())  # kept here all the same
            assert shared._failing and len(shared._pending) == 1  # kept for later
        finally:
            shared.close()

    asyncio.run(asyncio.wait_for(main(), 30))
