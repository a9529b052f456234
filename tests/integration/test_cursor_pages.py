"""Cursor (keyset) pages of GET /todos (API.md "Cursor pages"): every list page but
the last names the next one (`pagination.next_cursor` and `Link: rel="next"`); a
walk of those links visits every todo that existed when it began exactly once, in
the list's order (`created_at DESC, id DESC`, NULL times first), whatever is
inserted or deleted meanwhile, the cursor's own todo included; a string todod did
not make is 400 `invalid cursor`; any instance reads any other's cursors; and a
cursor page reads only its own rows at any depth (the plans PostgreSQL ran, as
auto_explain logs them)."""

import base64
import json
import os
import random
import re
import struct
import threading
import uuid
import zlib

from lib.marks import test
from lib.pg import get_pg
from lib.todod import Todod
from lib.checks import assert_json_error, wait_until

LINK_NEXT = re.compile(r'^<(/todos\?after=([A-Za-z0-9_-]{40})&limit=(\d+))>; rel="next"$')
PAGE_KEYS = {"page", "limit", "total", "total_pages", "has_next", "has_prev"}
AFTER_KEYS = {"limit", "total", "has_next"}
PG_EPOCH = 946684800  # 2000-01-01 in Unix seconds: binary timestamptz counts from there


# --------------------------------------------------------------------------- helpers

def sql(d, text):
    return d.pg.psql(text, db=d.db)


def start(d):
    d.start()
    want = int(d.conf.get("workers", 2))
    assert wait_until(lambda: all(w["db_connected"] for w in d.stats()["workers"])
                      and len(d.stats()["workers"]) == want, 10), d.stats()
    return d


def ordered_ids(d):
    out = sql(d, "SELECT id FROM todos ORDER BY created_at DESC, id DESC")
    return out.split() if out else []


def make_cursor(created_us, tid, version=1, flags=None):
    """The cursor of a key, written from the layout in daemon/cursor.h (not from
    todod's code): version, flags, created_at (big-endian microseconds since
    2000, None for NULL), the id's 16 bytes, CRC-32 of those little-endian."""
    if flags is None:
        flags = 1 if created_us is None else 0
    raw = bytes([version, flags]) + struct.pack(">q", created_us or 0) + uuid.UUID(tid).bytes
    raw += struct.pack("<I", zlib.crc32(raw))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_cursor(c):
    raw = base64.urlsafe_b64decode(c)
    assert len(c) == 40 and len(raw) == 30 and raw[0] == 1, c
    assert struct.unpack("<I", raw[26:])[0] == zlib.crc32(raw[:26]), c
    created = None if raw[1] & 1 else struct.unpack(">q", raw[2:10])[0]
    return created, str(uuid.UUID(bytes=raw[10:26]))


def sort_keys(d):
    """Each todo's (created_at in microseconds since 2000 or None, id), as the
    database holds it, by id."""
    out = sql(d, "SELECT id, CASE WHEN created_at IS NULL THEN 'null'"
                 " WHEN created_at = 'infinity' THEN '%d' WHEN created_at = '-infinity' THEN '%d'"
                 " ELSE ((extract(epoch FROM created_at) - %d) * 1000000)::bigint::text END"
                 " FROM todos" % (2 ** 63 - 1, -2 ** 63, PG_EPOCH))
    keys = {}
    for line in out.splitlines():
        tid, created = line.split("|")
        keys[tid] = (None if created == "null" else int(created)), tid
    return keys


def sort_key(d, tid):
    return sort_keys(d)[tid]


def get_page(c, path):
    r = c.request("GET", path)
    assert r.status == 200, "GET %s: %r" % (path, r)
    return r, r.json()


def next_link(r, body, limit):
    """The next page's path, after checking that next_cursor, the Link header and
    has_next agree; None on the last page."""
    p = body["pagination"]
    link = r.headers.get("link")
    if not p["has_next"]:
        assert "next_cursor" not in p and link is None, (p, link)
        return None
    m = LINK_NEXT.match(link or "")
    assert m, "Link: %r" % link
    assert m.group(2) == p["next_cursor"] and int(m.group(3)) == limit, (link, p)
    return m.group(1)


def walk(c, limit, keys=None, between=None):
    """Follows the next links from GET /todos?limit=L to the last page; returns
    the ids seen, in order. With keys (sort_keys()), checks that each cursor names
    the last todo of its page by its sort key; between(page_number, body) runs
    after each page."""
    path = "/todos?limit=%d" % limit
    ids, n = [], 0
    while path is not None:
        r, body = get_page(c, path)
        p = body["pagination"]
        want = (PAGE_KEYS if n == 0 else AFTER_KEYS) | ({"next_cursor"} if p["has_next"] else set())
        assert set(p) == want, "page %d: %r" % (n, p)
        assert p["limit"] == limit and len(body["data"]) <= limit, p
        if p["has_next"]:
            assert len(body["data"]) == limit, "a page before the last is full: %r" % p
        else:
            assert body["data"] or n == 0, "has_next led to an empty page: %r" % p
        if keys is not None and p["has_next"]:
            assert read_cursor(p["next_cursor"]) == keys[body["data"][-1]["id"]], \
                "page %d: the cursor does not name its last todo" % n
        ids += [t["id"] for t in body["data"]]
        n += 1
        if between is not None:
            between(n, body)
        path = next_link(r, body, limit)
    return ids


def seed_mixed(d):
    """Todos whose order exercises every case: distinct times, one time shared by
    a statement's rows, ties inserted by hand, NULL times (first in the list's
    order), 'infinity' and '-infinity'."""
    sql(d, "INSERT INTO todos (title, created_at) SELECT 'old ' || k,"
           " '2020-01-01T00:00:00Z'::timestamptz + k * interval '1 minute'"
           " FROM generate_series(1, 20) k")
    sql(d, "INSERT INTO todos (title) SELECT 'batch ' || k FROM generate_series(1, 15) k")
    sql(d, "INSERT INTO todos (title, created_at) SELECT 'tie ' || k, '2020-01-01T00:05:00Z'"
           " FROM generate_series(1, 5) k")
    sql(d, "INSERT INTO todos (title, created_at) SELECT 'no time ' || k, NULL"
           " FROM generate_series(1, 4) k")
    sql(d, "INSERT INTO todos (title, created_at) VALUES ('the end of time', 'infinity'),"
           " ('before time', '-infinity')")


# --------------------------------------------------------------------------- the tests

@test
def page_answers_carry_next_cursor_and_link_except_the_last():
    with Todod() as d:
        start(d)
        sql(d, "INSERT INTO todos (title) SELECT 'row ' || g FROM generate_series(1, 25) g")
        want = ordered_ids(d)
        for page in (1, 2, 3):
            r, body = get_page(d, "/todos?page=%d&limit=10" % page)
            path = next_link(r, body, 10)
            assert (path is not None) == (page < 3), (page, body["pagination"])
            if path is None:
                continue
            # the cursor names the page's last todo; its page is the next one
            assert read_cursor(body["pagination"]["next_cursor"])[1] == body["data"][-1]["id"]
            r, after = get_page(d, path)
            assert [t["id"] for t in after["data"]] == want[page * 10:page * 10 + 10], page
            assert after["pagination"]["total"] == 25, after["pagination"]
        # page 1 of 1: no cursor, no link
        r, body = get_page(d, "/todos?limit=100")
        assert next_link(r, body, 100) is None and len(body["data"]) == 25
        assert d.stop() == 0


@test
def cursor_walk_visits_every_todo_once_in_list_order_null_times_included():
    with Todod() as d:
        start(d)
        seed_mixed(d)
        want = ordered_ids(d)
        assert len(want) == 46
        assert sql(d, "SELECT count(*) FROM todos WHERE created_at IS NULL") == "4"
        keys = sort_keys(d)
        for limit in (1, 2, 3, 7, 23, 45, 46, 100):
            seen = walk(d, limit, keys=keys)
            assert seen == want, "limit %d: the walk is not the list's order:\n%s\n%s" % (
                limit, seen, want)
        # the last page by cursor: has_next false, no cursor, total exact
        r, body = get_page(d, "/todos?after=%s&limit=5" % make_cursor(*keys[want[-2]]))
        assert [t["id"] for t in body["data"]] == want[-1:], body
        assert body["pagination"] == {"limit": 5, "total": 46, "has_next": False}, body
        assert "link" not in r.headers, r.headers
        # after the very last todo: an empty page
        r, body = get_page(d, "/todos?after=%s" % make_cursor(*keys[want[-1]]))
        assert body == {"data": [], "pagination": {"limit": 10, "total": 46, "has_next": False}}
        assert d.stop() == 0


@test
def cursor_walk_while_others_insert_visits_each_existing_todo_exactly_once():
    """A thread POSTs todos (newest: ahead of every cursor) and a database session
    inserts todos with times among the existing ones (ahead of and behind the
    cursor), both all through the walk; each page is asked only once the table
    has grown since the page before."""
    with Todod() as d:
        start(d)
        sql(d, "INSERT INTO todos (title, created_at) SELECT 'old ' || k,"
               " '2026-01-01T00:00:00Z'::timestamptz - k * interval '1 second'"
               " FROM generate_series(1, 150) k;"
               "INSERT INTO todos (title) SELECT 'batch ' || k FROM generate_series(1, 50) k")
        before = set(ordered_ids(d))
        # one transaction per row, until terminated
        among = d.pg.psql_bg(
            "SET application_name = 'cursor_test_among';"
            "DO $$ BEGIN FOR i IN 1..100000 LOOP"
            " INSERT INTO todos (title, created_at) VALUES ('among', '2026-01-01T00:00:00.5Z'"
            "  ::timestamptz - (1 + floor(random() * 150)) * interval '1 second');"
            " COMMIT; PERFORM pg_sleep(0.002); END LOOP; END $$;", db=d.db)
        stop = threading.Event()
        posted = []
        errors = []

        def post():
            c = d.Client()
            try:
                while not stop.is_set():
                    r = c.request("POST", "/todos", body={"title": "meanwhile"})
                    assert r.status == 201, r
                    posted.append(r.json()["id"])
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)
            finally:
                c.close()

        def grown(n, body):
            total = body["pagination"]["total"]
            assert wait_until(lambda: get_page(d, "/todos?limit=1")[1]["pagination"]["total"]
                              >= total + 2, 10), "the table stopped growing at page %d" % n

        poster = threading.Thread(target=post)
        poster.start()
        try:
            c = d.Client()
            first = []
            seen = walk(c, 4, between=lambda n, body: (
                first.extend(t["id"] for t in body["data"]) if n == 1 else None,
                grown(n, body)))
            c.close()
        finally:
            stop.set()
            poster.join(10)
            sql(d, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE application_name = 'cursor_test_among'")
            among.wait(timeout=10)
            among.stdout.close()
            among.stderr.close()
        assert not errors, errors
        inserted = int(sql(d, "SELECT count(*) FROM todos WHERE title = 'among'"))
        assert len(posted) >= 50 and inserted >= 50, (len(posted), inserted)
        dup = {i for i in seen if seen.count(i) > 1}
        assert not dup, "%d todos seen twice: %s" % (len(dup), sorted(dup)[:5])
        missed = before - set(seen)
        assert not missed, "%d todos of the start never seen" % len(missed)
        # of the todos POSTed, only those on the first page: the others came after it began
        assert set(posted) & set(seen) <= set(first), "a todo created after the walk began"
        # and in the list's order, as the table holds it now
        order = {tid: i for i, tid in enumerate(ordered_ids(d))}
        pos = [order[i] for i in seen]
        assert pos == sorted(pos), "the walk left the list's order"
        assert d.stop() == 0


@test
def cursor_page_follows_its_todo_whether_or_not_it_still_exists():
    with Todod() as d:
        start(d)
        seed_mixed(d)
        want = ordered_ids(d)
        deleted = []

        def delete_cursors_todo(n, body):
            # the todo the next cursor names goes away before the next page is asked
            if body["pagination"]["has_next"]:
                tid = body["data"][-1]["id"]
                assert d.request("DELETE", "/todos/" + tid).status == 204
                deleted.append(tid)

        # limit 3: the cursors name NULL-time todos, tied ones, the infinities
        seen = walk(d, 3, between=delete_cursors_todo)
        assert seen == want, "deleting each cursor's todo changed the walk:\n%s\n%s" % (seen, want)
        assert len(deleted) == 15 and set(ordered_ids(d)) == set(want) - set(deleted)
        # a cursor of a todo that never existed, between two that do
        created, tid = sort_key(d, want[-1])
        ghost = str(uuid.UUID(int=uuid.UUID(tid).int + 1))
        r, body = get_page(d, "/todos?after=%s&limit=2" % make_cursor(created, ghost))
        assert [t["id"] for t in body["data"]] == [want[-1]], body
        assert d.stop() == 0


@test
def any_instance_reads_any_instances_cursors():
    with Todod() as a:
        start(a)
        seed_mixed(a)
        want = ordered_ids(a)
        with Todod(pg=a.pg, db=a.db, workers=1) as b:
            start(b)
            r, body = get_page(a, "/todos?limit=5")
            path = next_link(r, body, 5)
            ids = [t["id"] for t in body["data"]]
            turn = 0
            while path is not None:   # the pages alternate between the instances
                turn += 1
                r, body = get_page(b if turn % 2 else a, path)
                ids += [t["id"] for t in body["data"]]
                path = next_link(r, body, 5)
            assert ids == want
            # and one written from the documented layout, by this test
            created, tid = sort_key(a, want[9])
            for inst in (a, b):
                r, body = get_page(inst, "/todos?after=%s&limit=3" % make_cursor(created, tid))
                assert [t["id"] for t in body["data"]] == want[10:13], body
            assert b.stop() == 0
        assert a.stop() == 0


@test
def strings_todod_did_not_make_are_400_invalid_cursor():
    with Todod(workers=1) as d:
        start(d)
        seed_mixed(d)
        want = ordered_ids(d)
        created, tid = sort_key(d, want[5])
        good = make_cursor(created, tid)
        rnd = random.Random(22)
        typo = good[:17] + ("A" if good[17] != "A" else "B") + good[18:]
        swapped = next(good[:i] + good[i + 1] + good[i] + good[i + 2:] for i in range(39)
                       if good[i] != good[i + 1])
        bad = {
            "empty": "",
            "short": good[:-1],
            "long": good + "A",
            "padded": good + "=",
            "one character changed": typo,
            "two characters swapped": swapped,
            "standard base64 alphabet": good.replace("-", "+").replace("_", "/")
            if ("-" in good or "_" in good) else "+" + good[1:],
            "random bytes": base64.urlsafe_b64encode(bytes(rnd.getrandbits(8) for _ in range(30)))
            .decode(),
            "version 2": make_cursor(created, tid, version=2),
            "version 0": make_cursor(created, tid, version=0),
            "unknown flag": make_cursor(created, tid, flags=2),
            "NULL time with a time": make_cursor(created, tid, flags=1),
            "time past PostgreSQL's range": make_cursor(9223371331200000000, tid),
            "a NUL byte": "%00" + good[1:],
            "a todo id": tid,
        }
        for what, value in bad.items():
            r = d.request("GET", "/todos?after=" + value)
            assert r.status == 400 and r.json() == {"error": "invalid cursor"}, (what, value, r)
        # after with page, in either order, whatever the case of its name
        for q in ("after=%s&page=1" % good, "page=2&after=%s" % good, "after=%s&PAGE=1" % good,
                  "after=x&page=1"):
            assert_json_error(d.request("GET", "/todos?" + q), 400, "after", "page")
        assert_json_error(d.request("GET", "/todos?after=%s&limit=x" % good), 400, "limit")
        # the same cursor, %-encoded, is the same cursor; limit clamps as for page
        r, body = get_page(d, "/todos?after=%%%02X%s&limit=1000" % (ord(good[0]), good[1:]))
        assert [t["id"] for t in body["data"]] == want[6:], body
        assert body["pagination"]["limit"] == 100
        assert ordered_ids(d) == want
        assert d.stop() == 0


def _plans(pg, db, since):
    """The JSON plans auto_explain logged for database db after byte offset since,
    of the cursor pages' statements (those of the list's count without OFFSET)."""
    with open(pg.log_path, encoding="utf-8", errors="replace") as f:
        f.seek(since)
        text = f.read()
    plans = []
    for entry in re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", text):
        head = entry.split("\n", 1)[0]
        if ("@%s " % db) not in head or "plan:" not in entry:
            continue
        plan = json.loads(entry[entry.index("plan:") + len("plan:"):])
        text = plan.get("Query Text", "")
        if "todod_todo_count" in text and "OFFSET" not in text:
            plans.append(plan)
    return plans


def _nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


@test
def cursor_page_reads_only_its_rows_at_any_depth():
    """The plans PostgreSQL ran for cursor pages (auto_explain in todod's own
    sessions, custom and generic plans alike): no node reads more than about the
    page's rows plus one, deep in 10,000 distinct times, in the middle of 10,000 rows
    sharing one time, and at a NULL time. An OFFSET, or the (created_at) index and
    a sort over the tied rows, reads thousands."""
    pg = get_pg()
    with Todod(pg=pg, workers=1) as d:
        db = d.db
        sql(d, "ALTER DATABASE \"%s\" SET session_preload_libraries = 'auto_explain';"
               "ALTER DATABASE \"%s\" SET auto_explain.log_min_duration = 0;"
               "ALTER DATABASE \"%s\" SET auto_explain.log_analyze = on;"
               "ALTER DATABASE \"%s\" SET auto_explain.log_timing = off;"
               "ALTER DATABASE \"%s\" SET auto_explain.log_format = json" % ((db,) * 5))
        start(d)
        sql(d, "SET auto_explain.log_min_duration = -1;"   # not the seeding
               "INSERT INTO todos (title, created_at) SELECT 'old ' || k,"
               " '2020-01-01T00:00:00Z'::timestamptz - k * interval '1 second'"
               " FROM generate_series(1, 10000) k;"
               "INSERT INTO todos (title) SELECT 'batch ' || k FROM generate_series(1, 10000) k;"
               "INSERT INTO todos (title, created_at) SELECT 'no time', NULL"
               " FROM generate_series(1, 3);"
               "ANALYZE todos")
        want = ordered_ids(d)
        keys = sort_keys(d)
        since = os.path.getsize(pg.log_path)
        depths = (1, 5000, 17000, 20000, len(want) - 1)   # NULL, tied, distinct, last
        for depth in depths:
            for _ in range(7):   # past PostgreSQL's five custom plans: the generic one too
                r, body = get_page(d, "/todos?after=%s&limit=10" % make_cursor(*keys[want[depth]]))
                assert [t["id"] for t in body["data"]] == want[depth + 1:depth + 11], depth
        wait_until(lambda: len(_plans(pg, db, since)) >= 7 * len(depths), 10)
        plans = _plans(pg, db, since)
        assert len(plans) == 7 * len(depths), "auto_explain logged %d cursor-page plans, want %d" % (
            len(plans), 7 * len(depths))
        for plan in plans:
            nodes = list(_nodes(plan["Plan"]))
            read = max(n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0) for n in nodes)
            # the page's 11 rows, and a few more that a scan looks at to know where to stop
            assert read <= 20, "a cursor page's plan reads %d rows:\n%s" % (read, "\n".join(
                "%s %s rows=%s removed=%s" % (n.get("Node Type"), n.get("Index Name", ""),
                                              n.get("Actual Rows"), n.get("Rows Removed by Filter"))
                for n in nodes))
        assert d.stop() == 0
