"""Operations: privilege drop, pid file, journald priorities, access log, IPv6,
restart back-off, and leaks under valgrind (real processes, real signals)."""

import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

from lib import env
from lib.marks import skip, skip_if_sanitizer, test
from lib.todod import Todod
from lib.checks import wait_until


def proc_uid(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError("no Uid line for %d" % pid)


@test
def workers_run_as_the_configured_user_and_the_master_keeps_root():
    if os.geteuid() != 0:
        skip("needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    with Todod(user="nobody") as d:
        d.start()
        workers = d.worker_pids()
        assert len(workers) == 2, workers
        assert proc_uid(d.pid) == 0, "master uid %d" % proc_uid(d.pid)
        for pid in workers:
            assert proc_uid(pid) == nobody, "worker %d uid %d" % (pid, proc_uid(pid))
        assert d.request("GET", "/health").status == 200
        assert "workers run as user nobody" in d.log()


@test
def a_reload_with_a_root_only_config_works_and_the_pid_file_goes_at_exit():
    if os.geteuid() != 0:
        skip("needs root")
    nobody = pwd.getpwnam("nobody").pw_uid
    with Todod(user="nobody", workers=1) as d:
        path = os.path.join(d.dir, "todod.pid")
        d.write_conf(pid_file=path)
        os.chmod(d.conf_path, 0o600)
        os.chmod(d.dir, 0o700)
        d.start()
        old = d.worker_pids()
        d.write_conf(workers=2)
        os.chmod(d.conf_path, 0o600)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: len(d.worker_pids()) == 2 and not set(old) & set(d.worker_pids()),
                          10), d.log_tail()
        assert "reload failed" not in d.log(), d.log_tail()
        assert all(proc_uid(p) == nobody for p in d.worker_pids())
        assert d.stop() == 0
        assert not os.path.exists(path), "pid file left behind"


@test
def an_unknown_user_is_an_error_at_start():
    if os.geteuid() != 0:
        skip("needs root")
    with Todod(user="no-such-user-here") as d:
        try:
            d.start(timeout=3)
            raise AssertionError("started with an unknown user")
        except RuntimeError as e:
            assert "unknown user" in str(e), e


@test
def pid_file_holds_the_master_pid_and_is_removed_on_stop():
    with Todod() as d:
        path = os.path.join(d.dir, "todod.pid")
        d.write_conf(pid_file=path)
        d.start()
        with open(path) as f:
            assert int(f.read().strip()) == d.pid
        assert d.stop() == 0
        assert not os.path.exists(path), "pid file left behind"


@test
def a_reload_keeps_the_pid_file_it_started_with_until_the_next_start():
    """pid_file is read at start only: a reload that names another file keeps
    the running one (and says so), so the file written at start is the one
    removed at exit, and no second file claims the pid."""
    with Todod(workers=1) as d:
        first = os.path.join(d.dir, "first.pid")
        second = os.path.join(d.dir, "second.pid")
        d.write_conf(pid_file=first)
        d.start()
        old = d.worker_pids()
        d.write_conf(pid_file=second, workers=2)
        d.signal(signal.SIGHUP)
        assert wait_until(lambda: len(d.worker_pids()) == 2 and not set(old) & set(d.worker_pids()),
                          10), d.log_tail()
        assert "reload failed" not in d.log(), d.log_tail()
        assert "pid_file: a reload keeps %s" % first in d.log(), d.log_tail()
        with open(first) as f:
            assert int(f.read().strip()) == d.pid
        assert not os.path.exists(second), "a reload wrote a second pid file"
        assert d.stop() == 0
        assert not os.path.exists(first), "the pid file written at start was left behind"
        assert not os.path.exists(second)


@test
def log_lines_get_syslog_priority_prefixes_when_journald_reads_stderr():
    with Todod() as d:
        # lib/todod.py sends stderr to d.log_path: pretend journald reads that file.
        open(d.log_path, "ab").close()
        st = os.stat(d.log_path)
        d.start(env={"JOURNAL_STREAM": "%d:%d" % (st.st_dev, st.st_ino)})
        lines = [line for line in d.log().splitlines() if "todod " in line]
        assert lines, d.log()
        assert any(line.startswith("<6>todod master[") for line in lines), lines[:5]
        assert any(line.startswith("<4>todod master[") and "warn" in line for line in lines) or \
            os.geteuid() != 0, "the root warning should be priority 4: %r" % lines[:5]


@test
def log_lines_have_no_priority_prefix_when_stderr_is_not_the_journal():
    with Todod() as d:
        d.start(env={"JOURNAL_STREAM": "1:1"})
        lines = [line for line in d.log().splitlines() if "todod " in line]
        assert lines and not any(line.startswith("<") for line in lines), lines[:5]


@test
def access_log_on_logs_method_path_status_and_time():
    with Todod(access_log="on") as d:
        d.start()
        d.request("GET", "/todos/not-a-uuid")
        assert wait_until(lambda: '"GET /todos/not-a-uuid HTTP/1.1" 400 ' in d.log(), 2), d.log()


@test
def access_log_off_logs_no_requests():
    with Todod(access_log="off") as d:
        d.start()
        d.request("GET", "/todos/not-a-uuid")
        time.sleep(0.2)
        assert "/todos/not-a-uuid" not in d.log()


@test
def ipv6_literal_listen_address_serves():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::1", 0))
        port = s.getsockname()[1]
        s.close()
    except OSError:
        skip("no IPv6 loopback here")
    with Todod(listen="[::1]:%d" % port) as d:
        d.start()
        r = d.request("GET", "/health")
        assert r.status == 200 and r.body == b"ok"


@test
def a_worker_that_keeps_dying_is_restarted_with_growing_back_off():
    with Todod(workers=1) as d:
        d.start()
        gaps = []
        pids = d.worker_pids()
        for _ in range(5):
            old = pids[0]
            os.kill(old, signal.SIGKILL)
            t0 = time.monotonic()
            assert wait_until(lambda: d.worker_pids() and d.worker_pids()[0] != old, 5), \
                "no replacement for %d" % old
            gaps.append(time.monotonic() - t0)
            pids = d.worker_pids()
        # Died young each time: 0 (the first death is replaced at once), then 0.1,
        # 0.2, 0.4, 0.8 s of back-off.
        assert gaps[0] < 0.5, gaps
        assert gaps[-1] >= 0.6, gaps
        assert gaps[-1] > gaps[1], gaps
        assert "keeps dying" in d.log()
        assert wait_until(lambda: d.request("GET", "/health").status == 200, 5)


@test(slow=True)
def master_and_worker_leak_nothing_under_valgrind():
    skip_if_sanitizer("valgrind and AddressSanitizer do not mix")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise AssertionError("valgrind is not installed (conf/dev/deps.sh test installs it)")
    tmp = tempfile.mkdtemp(prefix="todod-vg-")
    os.chmod(tmp, 0o755)
    wrapper = os.path.join(tmp, "todod-under-valgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec %s --leak-check=full --show-leak-kinds=definite,indirect "
                "--errors-for-leak-kinds=definite,indirect --error-exitcode=99 "
                "--log-file=%s/vg.%%p.log %s \"$@\"\n" % (valgrind, tmp, env.TODOD_BIN))
    os.chmod(wrapper, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    saved = env.TODOD_BIN
    env.TODOD_BIN = wrapper
    try:
        with Todod(workers=1) as d:
            d.start(timeout=30)
            j = {"title": "valgrind"}
            created = d.request("POST", "/todos", j, timeout=10).json()
            path = "/todos/" + created["id"]
            for method, p, body in (("GET", path, None), ("PUT", path, {"done": True}),
                                    ("GET", "/todos?limit=5", None), ("GET", "/metrics", None),
                                    ("GET", "/stats", None), ("GET", "/todos/done/true", None),
                                    ("POST", "/todos", {"title": ""}),
                                    ("POST", "/todos/performance-test",
                                     {"message_count": 200, "batch_size": 20}),
                                    ("DELETE", path, None), ("GET", "/nope", None)):
                assert d.request(method, p, body, timeout=20).status < 500
            assert d.stop(timeout=60) == 0, "master exit code (99 = valgrind errors)"
    finally:
        env.TODOD_BIN = saved
    logs = [os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith("vg.")]
    assert len(logs) >= 2, "expected logs of the master and a worker: %r" % logs
    for path in logs:
        with open(path) as f:
            text = f.read()
        assert "ERROR SUMMARY: 0 errors" in text, text[-3000:]
        assert "definitely lost: 0" in text or "no leaks are possible" in text or \
            "All heap blocks were freed" in text, text[-3000:]
    shutil.rmtree(tmp, ignore_errors=True)


@test
def live_metrics_endpoint_passes_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        raise AssertionError("promtool is not installed (conf/dev/deps.sh test installs it)")
    with Todod() as d:
        d.start()
        for method, path, body in (("GET", "/health", None), ("POST", "/todos", {"title": "m"}),
                                   ("GET", "/nope", None), ("PATCH", "/todos", None),
                                   ("POST", "/todos/performance-test",
                                    {"message_count": 10, "batch_size": 5})):
            d.request(method, path, body)
        r = d.request("GET", "/metrics")
        assert r.status == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
        check = subprocess.run([promtool, "check", "metrics"], input=r.body, capture_output=True)
        assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), \
            (check.stdout, check.stderr)
        assert b'todod_http_requests_total{route="other",method="GET",code="404"} 1' in r.body
        assert b'todod_perf_todos_total{result="success"} 10' in r.body


@test
def make_install_honours_prefix_and_destdir():
    dest = tempfile.mkdtemp(prefix="todod-install-")
    try:
        out = subprocess.run(["make", "-s", "install", "DESTDIR=" + dest, "PREFIX=/opt/todod"],
                             cwd=env.ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        binary = os.path.join(dest, "opt/todod/sbin/todod")
        assert os.access(binary, os.X_OK), os.listdir(dest)
        assert os.path.isfile(os.path.join(dest, "etc/todod/todod.conf"))
        with open(os.path.join(dest, "opt/todod/lib/systemd/system/todod.service")) as f:
            unit = f.read()
        assert "ExecStart=/opt/todod/sbin/todod -c /etc/todod/todod.conf" in unit, unit
        assert "@" not in unit.split("ExecStart=")[1].split("\n")[0]
        v = subprocess.run([binary, "-V"], capture_output=True, text=True)
        assert v.returncode == 0 and v.stdout.startswith("todod ")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
