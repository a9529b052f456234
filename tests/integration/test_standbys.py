"""Read consistency (API.md "Read consistency (with standbys)"; DAEMON.md
"Standbys for reads"): every answer of a database-backed route carries `Todod-Lsn`,
for a write a WAL position at or past its commit record (pg_walinspect finds the
record), for a read one its data is at least as new as; `Server-Timing` says who
served it; a malformed `Todod-After` is 400 and reaches no server."""

import re

from lib.marks import test
from lib.todod import Todod
from lib.checks import assert_json_error

LSN = re.compile(r"^([0-9A-F]{1,8})/([0-9A-F]{1,8})$")
TIMING = re.compile(r'^db;dur=\d+\.\d{3};desc="(primary|standby)", total;dur=\d+\.\d{3}$')


def lsn(text):
    m = LSN.match(text or "")
    assert m, text
    return int(m.group(1), 16) << 32 | int(m.group(2), 16)


def answer_lsn(r):
    return lsn(r.headers.get("todod-lsn"))


def served_by(r):
    m = TIMING.match(r.headers.get("server-timing", ""))
    assert m, (r, r.headers.get("server-timing"))
    return m.group(1)


def sql(d, text):
    return d.pg.psql(text, db=d.db)


def commit_end(d, todo_id, since):
    """The end of the commit record of the transaction that last wrote todo_id,
    found in the WAL from `since` on (pg_walinspect)."""
    xid = sql(d, "SELECT xmin FROM todos WHERE id = '%s'" % todo_id)
    end = sql(d, "SELECT end_lsn FROM pg_get_wal_records_info('%s', pg_current_wal_flush_lsn())"
                 " WHERE xid = %s AND record_type = 'COMMIT'" % (since, xid))
    assert end, "no commit record of xid %s since %s" % (xid, since)
    return lsn(end)


@test
def every_database_answer_names_its_wal_position_and_server():
    with Todod(workers=2) as d:
        d.start()
        sql(d, "CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        since = sql(d, "SELECT pg_current_wal_insert_lsn()")
        created = d.request("POST", "/todos", {"title": "t"})
        assert created.status == 201, created
        tid = created.json()["id"]
        assert served_by(created) == "primary"
        # a write's position is at or past its commit record: a standby that has
        # replayed it sees the todo
        end = commit_end(d, tid, since)
        assert answer_lsn(created) >= end, (created.headers["todod-lsn"], end)
        since = sql(d, "SELECT pg_current_wal_insert_lsn()")
        updated = d.request("PUT", "/todos/" + tid, {"done": True})
        assert updated.status == 200 and served_by(updated) == "primary", updated
        assert answer_lsn(updated) >= commit_end(d, tid, since) > answer_lsn(created)
        # reads: a position their data is at least as new as (so past the update)
        d.request("POST", "/todos", {"title": "u"})
        cursor = d.request("GET", "/todos?limit=1").json()["pagination"]["next_cursor"]
        for path in ("/todos/" + tid, "/todos", "/todos?limit=1&after=" + cursor,
                     "/todos/done/true", "/todos/done/false", "/todos/done/true?page=9",
                     "/todos/00000000-0000-0000-0000-000000000000"):
            r = d.request("GET", path)
            assert r.status in (200, 404), (path, r)
            assert served_by(r) == "primary", (path, r)
            assert answer_lsn(r) >= answer_lsn(updated), (path, r.headers)
        assert d.request("GET", "/todos/00000000-0000-0000-0000-000000000000").status == 404
        deleted = d.request("DELETE", "/todos/" + tid)
        assert deleted.status == 204 and served_by(deleted) == "primary", deleted
        assert answer_lsn(deleted) > answer_lsn(updated)
        assert answer_lsn(deleted) <= lsn(sql(d, "SELECT pg_current_wal_insert_lsn()"))
        # not answered by a server: no position, no desc
        bad = d.request("GET", "/todos/not-a-uuid")
        assert bad.status == 400 and "todod-lsn" not in bad.headers, bad
        assert re.match(r"^db;dur=0\.000, total;dur=", bad.headers["server-timing"]), bad.headers


@test
def a_malformed_todod_after_is_400_and_reaches_no_server():
    with Todod(workers=1) as d:
        d.start()
        tid = d.request("POST", "/todos", {"title": "t"}).json()["id"]
        for bad in ("", "0", "0/", "/0", "x/0", "0/0/0", "123456789/0", "0/123456789", "-1/0",
                    "0/1 junk", "0x1/0"):
            for path in ("/todos/" + tid, "/todos", "/todos/done/false"):
                r = d.request("GET", path, headers={"Todod-After": bad})
                assert_json_error(r, 400, "Todod-After")
                assert "todod-lsn" not in r.headers, r.headers
        # well formed, either case, any value: served (by the primary, which has all)
        for good in ("0/0", "0/16b3748", "FFFFFFFF/FFFFFFFF"):
            r = d.request("GET", "/todos/" + tid, headers={"Todod-After": good})
            assert r.status == 200 and served_by(r) == "primary", (good, r)

