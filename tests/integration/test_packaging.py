"""Packaging: the OpenAPI document, the systemd unit, and the README's map of the code.

Each test is a plain function, so it can also be run on its own:
    python3 -c 'import sys; sys.path.insert(0, "tests/integration");
                import test_packaging as t; t.systemd_unit_has_required_settings()'
Only openapi_lists_every_route starts the daemon.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

from lib.env import ROOT
from lib.marks import test
from lib.todod import Todod

OPENAPI = os.path.join(ROOT, "daemon", "openapi.json")
UNIT = os.path.join(ROOT, "systemd", "todod.service")
VALIDATE_JS = os.path.join(ROOT, "tests", "integration", "validate_openapi.js")

# The OpenAPI validator, installed project-locally from the npm registry
# (tests/.tools is not committed). Exact version: 13.x needs Node.js >= 22.
TOOLS = os.path.join(ROOT, "tests", ".tools")
VALIDATOR_PKG = "@apidevtools/swagger-parser"
VALIDATOR_VERSION = "12.1.0"

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

EXPECTED_ROUTES = {
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/stats"),
    ("GET", "/api-docs/openapi.json"),
    ("GET", "/dashboard"),
    ("GET", "/live"),
    ("GET", "/ready"),
    ("GET", "/todos"),
    ("POST", "/todos"),
    ("POST", "/todos/performance-test"),
    ("DELETE", "/todos/performance-test/{run_id}"),
    ("GET", "/todos/done/{done}"),
    ("GET", "/todos/{id}"),
    ("PUT", "/todos/{id}"),
    ("DELETE", "/todos/{id}"),
}

# `systemd-analyze security` exposure (0.0 best .. 10.0 worst) the unit must stay under.
MAX_EXPOSURE = 2.0


def _run(argv, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)


# --------------------------------------------------------------------------- OpenAPI


def _ensure_validator():
    """Install the pinned validator into tests/.tools unless it is already there."""
    assert shutil.which("node"), "node not found (conf/dev/deps.sh test installs nodejs)"
    pkg_json = os.path.join(TOOLS, "node_modules", *VALIDATOR_PKG.split("/"), "package.json")
    try:
        with open(pkg_json, encoding="utf-8") as f:
            if json.load(f).get("version") == VALIDATOR_VERSION:
                return
    except (OSError, ValueError):
        pass
    assert shutil.which("npm"), "npm not found (conf/dev/deps.sh test installs npm)"
    os.makedirs(TOOLS, exist_ok=True)
    r = _run(["npm", "install", "--prefix", TOOLS, "--no-audit", "--no-fund",
              "--save-exact", f"{VALIDATOR_PKG}@{VALIDATOR_VERSION}"], timeout=600)
    assert r.returncode == 0, f"npm install {VALIDATOR_PKG}@{VALIDATOR_VERSION} failed:\n{r.stdout}"


def _load_openapi():
    with open(OPENAPI, encoding="utf-8") as f:
        return json.load(f)


def _document_routes(doc):
    return {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in HTTP_METHODS}


@test
def openapi_document_is_valid():
    doc = _load_openapi()
    assert doc.get("openapi") == "3.0.3", f"openapi version {doc.get('openapi')!r}"
    assert doc["info"]["version"] == "0.1.0", doc["info"]
    _ensure_validator()
    r = _run(["node", VALIDATE_JS, OPENAPI, TOOLS], timeout=120)
    assert r.returncode == 0, f"OpenAPI validation failed:\n{r.stdout}"
    assert "valid OpenAPI" in r.stdout, r.stdout


def _router_routes():
    """(METHOD, pattern) pairs of the route table in daemon/routes.c."""
    with open(os.path.join(ROOT, "daemon", "routes.c")) as f:
        src = f.read()
    table = src[src.index("static const struct route routes[] = {"):]
    table = table[:table.index("};")]
    pairs = set()
    for pattern, methods in re.findall(r'\{"(/[^"]*)",\s*(?:[\w |]+,\s*)?\{(.*?)\}\},?\n', table, re.S):
        for m in re.findall(r"STATS_([A-Z]+)", methods):
            pairs.add((m, pattern))
    assert len(pairs) >= 10, "could not read the route table: %r" % pairs
    return pairs


@test
def openapi_lists_every_route():
    doc = _load_openapi()
    routes = _document_routes(doc)
    missing = EXPECTED_ROUTES - routes
    extra = routes - EXPECTED_ROUTES
    assert not missing and not extra, \
        f"routes differ from API.md: missing {sorted(missing)}, extra {sorted(extra)}"
    router = _router_routes()
    assert routes == router, \
        f"document vs router: only documented {sorted(routes - router)}, " \
        f"only routed {sorted(router - routes)}"

    with Todod(workers=1) as d:
        d.start()
        r = d.request("GET", "/api-docs/openapi.json")
        assert r.status == 200, f"GET /api-docs/openapi.json: {r.status} {r.body!r}"
        ctype = r.headers.get("content-type", "")
        assert ctype.split(";")[0].strip().lower() == "application/json", \
            f"Content-Type {ctype!r}"
        body = r.body.decode("utf-8") if isinstance(r.body, (bytes, bytearray)) else r.body
        served = json.loads(body)
    assert served == doc, "the served document differs from daemon/openapi.json"


# --------------------------------------------------------------------------- systemd


def _substituted_unit(tmp):
    """A copy of the unit with the placeholders `make install` fills in, in tmp.

    ExecStart's binary must exist and be executable for `systemd-analyze verify`:
    the real build/todod when it is built, an executable stub otherwise.
    """
    sbindir = os.path.join(tmp, "sbin")
    sysconfdir = os.path.join(tmp, "etc")
    os.makedirs(sbindir)
    os.makedirs(os.path.join(sysconfdir, "todod"))
    exe = os.path.join(sbindir, "todod")
    built = os.path.join(ROOT, "build", "todod")
    if os.access(built, os.X_OK):
        os.symlink(built, exe)
    else:
        with open(exe, "w", encoding="utf-8") as f:
            f.write("#!/bin/sh\nexit 0\n")
        os.chmod(exe, 0o755)
    conf = os.path.join(ROOT, "conf", "todod.conf")
    if os.path.exists(conf):
        shutil.copy(conf, os.path.join(sysconfdir, "todod", "todod.conf"))

    with open(UNIT, encoding="utf-8") as f:
        text = f.read()
    text = text.replace("@SBINDIR@", sbindir).replace("@SYSCONFDIR@", sysconfdir)
    left = re.findall(r"@[A-Z_]+@", text)
    assert not left, f"placeholders the test does not know: {left}"
    # The file name is the unit name: it has to stay todod.service.
    path = os.path.join(tmp, "todod.service")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


@test
def systemd_unit_passes_analyze_verify():
    sa = shutil.which("systemd-analyze")
    assert sa, "systemd-analyze not found (conf/dev/deps.sh test installs systemd)"
    with tempfile.TemporaryDirectory(prefix="todod-unit-") as tmp:
        unit = _substituted_unit(tmp)
        # --man=no: the unit has no Documentation= to check anyway.
        r = _run([sa, "verify", "--man=no", unit], timeout=120)
        # Other units on the host may draw warnings; lines about ours may not.
        ours = [ln for ln in r.stdout.splitlines()
                if "todod" in ln or tmp in ln or unit in ln]
        assert r.returncode == 0 and not ours, \
            f"systemd-analyze verify: exit {r.returncode}\n{r.stdout}"

        # The exposure figure of `systemd-analyze security` (needs --offline, systemd >= 252).
        r = _run([sa, "security", "--offline=true", "--no-pager", unit], timeout=120)
        m = re.search(r"Overall exposure level for todod\.service:\s*([0-9.]+)", r.stdout)
        assert m, f"systemd-analyze security --offline=true: exit {r.returncode}\n{r.stdout}"
        exposure = float(m.group(1))
        assert exposure < MAX_EXPOSURE, \
            f"systemd-analyze security exposure {exposure} (want < {MAX_EXPOSURE}):\n{r.stdout}"


def _parse_unit(path):
    """{section: {key: [values in order]}}, as systemd reads it (comments, continuations)."""
    sections = {}
    cur = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + " " + lines[i].strip()
            i += 1
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], {})
            continue
        assert cur is not None and "=" in line, f"{path}: cannot parse line {line!r}"
        key, value = line.split("=", 1)
        cur.setdefault(key.strip(), []).append(value.strip())
    return sections


def _last(sec, key):
    vals = sec.get(key)
    assert vals, f"{key}= is not set"
    return vals[-1]


def _yes(sec, key):
    return _last(sec, key).lower() in ("yes", "true", "on", "1")


@test
def systemd_unit_has_required_settings():
    unit = _parse_unit(UNIT)
    assert set(unit) >= {"Unit", "Service", "Install"}, f"sections: {sorted(unit)}"
    svc = unit["Service"]

    assert _last(svc, "Type") == "notify", _last(svc, "Type")
    exec_start = _last(svc, "ExecStart")
    assert exec_start.split()[0] == "@SBINDIR@/todod", exec_start
    assert "-c @SYSCONFDIR@/todod/todod.conf" in exec_start, exec_start
    reload_cmd = _last(svc, "ExecReload")
    assert re.search(r"\bkill\s+(-HUP|-s\s*HUP|-SIGHUP|-s\s*SIGHUP)\s+\$MAINPID\b", reload_cmd), \
        f"ExecReload={reload_cmd} does not send SIGHUP to $MAINPID"
    assert _last(svc, "KillMode") == "mixed", _last(svc, "KillMode")
    assert _last(svc, "KillSignal") in ("SIGTERM", "TERM", "15"), _last(svc, "KillSignal")
    assert float(_last(svc, "TimeoutStopSec").rstrip("s")) > 10, \
        "TimeoutStopSec must exceed shutdown_timeout's default (10 s)"
    assert _last(svc, "Restart") == "on-failure", _last(svc, "Restart")

    assert _yes(svc, "NoNewPrivileges"), "NoNewPrivileges"
    assert _last(svc, "ProtectSystem") == "strict", _last(svc, "ProtectSystem")
    assert _yes(svc, "PrivateTmp"), "PrivateTmp"
    assert _yes(svc, "DynamicUser") if "DynamicUser" in svc else svc.get("User"), \
        "the service must run as an unprivileged user (DynamicUser= or User=)"

    families = " ".join(svc.get("RestrictAddressFamilies", [])).split()
    assert families and not families[0].startswith("~"), \
        f"RestrictAddressFamilies must be an allow list: {families}"
    assert "AF_INET" in families and set(families) <= {"AF_INET", "AF_INET6", "AF_UNIX"}, families

    filters = [v for v in svc.get("SystemCallFilter", []) if v]
    assert filters and not filters[0].startswith("~"), \
        f"SystemCallFilter must start with an allow list: {filters}"

    # An empty assignment resets the set: what counts is after the last one.
    caps = svc.get("CapabilityBoundingSet")
    assert caps is not None, "CapabilityBoundingSet= is not set"
    assert caps[-1] == "", f"CapabilityBoundingSet must be empty: {caps}"
    assert svc.get("AmbientCapabilities", [""])[-1] == "", svc.get("AmbientCapabilities")

    assert "multi-user.target" in " ".join(unit["Install"].get("WantedBy", [])).split()


# --------------------------------------------------------------------------- the README's map

def _include_layers():
    """{layer: set of modules} of the include graph of daemon/ and common/: a
    module (a .c with its .h) is one layer above the highest it includes."""
    mods = {}
    for top in ("daemon", "common"):
        for name in os.listdir(os.path.join(ROOT, top)):
            base, ext = os.path.splitext(name)
            if ext in (".c", ".h"):
                mod = base if top == "daemon" else "common/" + base
                mods.setdefault(mod, []).append(os.path.join(ROOT, top, name))
    by_header = {os.path.basename(m) + ".h": m for m in mods}
    deps = {m: set() for m in mods}
    for m, files in mods.items():
        for path in files:
            with open(path) as f:
                for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', f.read(), re.M):
                    other = by_header.get(os.path.basename(inc))
                    if other is not None and other != m:
                        deps[m].add(other)
    level = {}

    def layer(m, seen=()):
        assert m not in seen, "an include circle: %s" % " -> ".join(seen + (m,))
        if m not in level:
            level[m] = 1 + max((layer(d, seen + (m,)) for d in deps[m]), default=-1)
        return level[m]
    out = {}
    for m in mods:
        out.setdefault(layer(m), set()).add(m)
    return out


def _readme_layers():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = re.search(r"layers, bottom up.*?```\n(.*?)```", text, re.S)
    assert block, "README.md has no drawing of the include graph's layers"
    out, current = {}, None
    for line in block.group(1).splitlines():
        m = re.match(r"\s*(\d+)\s+(.*)", line)
        if m:
            current = int(m.group(1))
            line = m.group(2)
        out.setdefault(current, set()).update(line.split())
    return out


@test
def readme_draws_the_include_graph_as_the_code_has_it():
    code, readme = _include_layers(), _readme_layers()
    diff = ["layer %d: README %s, code %s" % (n, sorted(readme.get(n, set()) - code.get(n, set())),
                                               sorted(code.get(n, set()) - readme.get(n, set())))
            for n in sorted(set(code) | set(readme)) if code.get(n) != readme.get(n)]
    assert not diff, "README.md's layers differ from the includes:\n" + "\n".join(diff)
