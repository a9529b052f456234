"""Manual pages (daemon/todod.8, conf/todod.conf.5) and the shipped conf/todod.conf.

- both format without a warning (man --warnings, groff -ww) and fit 80 columns;
- todod.conf(5) has an entry for every key of the table in common/conf.c, stating
  the table's default and showing examples that `todod -t` accepts, and no entry
  for a key the table lacks: a key cannot be added or removed without its entry;
  the entries that say "A reload keeps" and "No message quotes" are those of the
  keys flagged CONF_IMMUTABLE and CONF_SECRET;
- conf/todod.conf lists every key of the table, in its order, commented out with
  its default (an example and "Unset" for a key without one), and nothing else;
- todod(8) documents exactly the options of daemon/main.c's getopt string;
- `make install` puts both pages under $(PREFIX)/share/man, `make uninstall`
  removes them.

The pages are read as a reader sees them: rendered by groff to plain text, with a
line length wide enough that no paragraph wraps, so the checks do not depend on
how the roff source is marked up.
"""

import os
import re
import shutil
import subprocess
import tempfile

from lib import env
from lib.env import ROOT
from lib.marks import test

PAGE8 = os.path.join(ROOT, "daemon", "todod.8")
PAGE5 = os.path.join(ROOT, "conf", "todod.conf.5")
PAGES = (PAGE8, PAGE5)
CONF_C = os.path.join(ROOT, "common", "conf.c")
SHIPPED_CONF = os.path.join(ROOT, "conf", "todod.conf")
MAIN_C = os.path.join(ROOT, "daemon", "main.c")
MAKEFILE = os.path.join(ROOT, "Makefile")

WIDTH = 80  # columns a page must fit when read with man at that width

# man-db: no pager, and no seccomp sandbox (it fails in some containers).
MAN_ENV = dict(os.environ, MANPAGER="cat", PAGER="cat", MAN_DISABLE_SECCOMP="1")
MAN_ENV.pop("MANWIDTH", None)
MAN_ENV.pop("MANOPT", None)


def _tool(name):
    path = shutil.which(name)
    assert path, f"{name} not found (conf/dev/deps.sh test installs man-db and groff-base)"
    return path


def _run(argv, **kw):
    kw.setdefault("env", MAN_ENV)
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=120, **kw)


def _render(page):
    """The page as plain text, one line per paragraph (no wrapping, no hyphenation)."""
    r = _run([_tool("groff"), "-man", "-Tascii", "-rLL=4000n", "-rHY=0", "-P-cbu", page])
    assert r.returncode == 0 and not r.stderr, f"groff {page}: exit {r.returncode}\n{r.stderr}"
    return r.stdout


def _sections(text):
    """{SECTION NAME: [lines]}: a section starts at an unindented line."""
    sections, cur = {}, None
    for line in text.splitlines():
        if line and not line[0].isspace():
            if re.fullmatch(r"[A-Z][A-Z ]*", line.strip()):
                cur = sections.setdefault(line.strip(), [])
            continue  # the header and footer lines
        if cur is not None:
            cur.append(line)
    return sections


# --------------------------------------------------------------------------- the sources


def _table_rows(path=CONF_C):
    """[(name, default, flags)] of `static const struct conf_key keys[]`: default None
    for NULL, flags the set of CONF_* names of the flags column."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    start = src.index("static const struct conf_key keys[] = {")
    body = src[start:src.index("};", start)]
    # {"name", CONF_T_TYPE, OFF(field), min, max, default, CONF_A | CONF_B or 0},
    row = re.compile(r'^\s*\{\s*"([a-z][a-z0-9_]*)"\s*,\s*CONF_T_[A-Z_]+\s*,\s*OFF\(\w+\)\s*,'
                     r'\s*[^,{}]+,\s*[^,{}]+,'
                     r'\s*(NULL|"(?:[^"\\]|\\.)*")\s*,'
                     r'\s*(0|CONF_[A-Z_]+(?:\s*\|\s*CONF_[A-Z_]+)*)\s*\},?\s*$')
    keys, rows = [], [ln for ln in body.splitlines() if ln.strip().startswith("{")]
    for ln in rows:
        m = row.match(ln)
        assert m, f"{path}: cannot read this row of keys[]: {ln.strip()!r}"
        default = None if m.group(2) == "NULL" else m.group(2)[1:-1]
        flags = set() if m.group(3) == "0" else {f.strip() for f in m.group(3).split("|")}
        keys.append((m.group(1), default, flags))
    assert len(keys) >= 10, f"{path}: only {len(keys)} rows read from keys[]"
    names = [k for k, _, _ in keys]
    assert len(names) == len(set(names)), f"{path}: a key appears twice in keys[]: {names}"
    return keys


def _table_keys(path=CONF_C):
    """[(name, default)] of the key table; default None for NULL."""
    return [(name, default) for name, default, _ in _table_rows(path)]


def _getopt_options(path=MAIN_C):
    """{letter: takes_argument} from the getopt() call of main.c."""
    with open(path, encoding="utf-8") as f:
        src = f.read()
    found = re.findall(r'getopt\s*\(\s*argc\s*,\s*argv\s*,\s*"([^"]*)"\s*\)', src)
    assert len(found) == 1, f"{path}: expected one getopt(argc, argv, \"...\") call, found {found}"
    spec = found[0].lstrip("+-:")
    opts = {}
    for m in re.finditer(r"([A-Za-z0-9])(:?)", spec):
        opts[m.group(1)] = bool(m.group(2))
    assert opts, f"{path}: empty getopt string"
    return opts


# --------------------------------------------------------------------------- todod.conf(5)


def _key_entries(text):
    """{key: [lines of its entry]} from the KEYS section of the rendered todod.conf(5).

    An entry is a tagged paragraph: an unindented (7 columns) tag "key" or
    "key = value", then its indented body, up to the next tag or subsection.
    """
    keys = _sections(text).get("KEYS")
    assert keys, "todod.conf(5) has no KEYS section"
    entries, cur = {}, None
    for line in keys:
        m = re.match(r"^ {7}([a-z][a-z0-9_]*)(?: = .*)?$", line)
        if m:
            assert m.group(1) not in entries, f"todod.conf(5): two entries for {m.group(1)}"
            cur = entries.setdefault(m.group(1), [])
        elif re.match(r"^ {1,6}\S", line):  # a subsection heading
            cur = None
        elif cur is not None:
            cur.append(line)
    return entries


def _stated_default(key, body):
    """The text after "Default:" in an entry (exactly one)."""
    found = re.findall(r"\bDefault: *(.*)", "\n".join(body))
    assert len(found) == 1, \
        f"todod.conf(5), {key}: want one \"Default:\" statement, found {len(found)}: {found}"
    return found[0].strip()


def _default_stated(default, stated):
    """Whether the stated default is the table's. NULL: "unset"; "": "empty"."""
    if default is None:
        return re.match(r"unset\b", stated) is not None
    if default == "":
        return re.match(r"empty\b", stated) is not None
    return re.match(re.escape(default) + r"[.,;)]?(\s|$)", stated) is not None


def _examples(key, body):
    """The lines after "Example:" or "Examples:" up to the next blank line."""
    out, taking = [], False
    for line in body:
        s = line.strip()
        if re.fullmatch(r"Examples?:", s):
            taking = True
        elif taking and not s:
            taking = False
        elif taking:
            out.append(s)
    return out


def _config_lines(text):
    """Every rendered line shaped like a configuration line "key = value" (a tag
    "key = placeholder" of the KEYS section included)."""
    return re.findall(r"(?m)^\s*#?\s*([a-z][a-z0-9_]*) = ", text)


def _todod_accepts(lines, what):
    """Run `todod -t` on a file of these lines; fail with todod's message if invalid."""
    assert os.access(env.TODOD_BIN, os.X_OK), \
        f"{env.TODOD_BIN} is not built (make all, or set TODOD_BIN)"
    child_env = dict(os.environ)
    child_env.pop("DATABASE_URL", None)
    with tempfile.TemporaryDirectory(prefix="todod-man-") as tmp:
        path = os.path.join(tmp, "todod.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        r = subprocess.run([env.TODOD_BIN, "-t", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=30, env=child_env)
    assert r.returncode == 0 and "configuration OK" in r.stdout, \
        f"todod -t rejects {what}:\n  " + "\n  ".join(lines) + f"\n{r.stdout}{r.stderr}"


def check_conf_page(page=PAGE5, conf_c=CONF_C):
    table = _table_keys(conf_c)
    names = {k for k, _ in table}
    text = _render(page)
    entries = _key_entries(text)

    missing = [k for k, _ in table if k not in entries]
    extra = sorted(set(entries) - names)
    assert not missing and not extra, \
        f"todod.conf(5) vs keys[] of common/conf.c: keys without an entry {missing}, " \
        f"entries for keys the table does not have {extra}"

    # No other part of the page (syntax, examples) shows a key the table lacks.
    unknown = sorted(set(_config_lines(text)) - names)
    assert not unknown, f"todod.conf(5) shows configuration lines of unknown keys: {unknown}"

    for key, default in table:
        body = entries[key]
        stated = _stated_default(key, body)
        want = {None: "unset", "": "empty"}.get(default, default)
        assert _default_stated(default, stated), \
            f"todod.conf(5), {key}: says \"Default: {stated}\", the table says {want!r}"
        examples = _examples(key, body)
        assert examples, f"todod.conf(5), {key}: no \"Example:\" line"
        for ex in examples:
            assert re.match(re.escape(key) + r" = \S", ex), \
                f"todod.conf(5), {key}: example {ex!r} does not set {key}"
            _todod_accepts([ex], f"the example of {key}")

    # What the flags make the code do is said of exactly the flagged keys.
    rows = _table_rows(conf_c)
    for flag, phrase in (("CONF_IMMUTABLE", "A reload keeps"), ("CONF_SECRET", "No message quotes")):
        flagged = sorted(k for k, _, flags in rows if flag in flags)
        said = sorted(k for k, body in entries.items()
                      if re.search(r"\b%s\b" % phrase, " ".join(s.strip() for s in body)))
        assert said == flagged, \
            f"todod.conf(5) says \"{phrase}\" of {said}; the table's {flag} keys are {flagged}"

    # The EXAMPLES section's first display is a whole configuration file.
    lines = _sections(text).get("EXAMPLES", [])
    block, started = [], False
    for line in lines:
        s = line.strip()
        if re.match(r"(#|[a-z][a-z0-9_]* = )", s) and line.startswith(" " * 8):
            block.append(s)
            started = True
        elif started:
            break
    assert sum(1 for s in block if not s.startswith("#")) >= 5, \
        f"todod.conf(5): EXAMPLES shows no configuration file: {block}"
    _todod_accepts(block, "the EXAMPLES file of todod.conf(5)")


@test
def manpage_conf_documents_every_key_with_its_default():
    check_conf_page()


# --------------------------------------------------------------------------- conf/todod.conf


def check_shipped_conf(path=SHIPPED_CONF, conf_c=CONF_C):
    """The shipped file sets nothing: it lists every key of the table, in the
    table's order, once, commented out ("#key = value", prose is "# ..."), with
    the table's default; a key without a default shows an example and its
    comment says "Unset". Nothing else looks like a setting."""
    table = _table_keys(conf_c)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    setting = re.compile(r"^(#?)\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
    listed, comment = [], []
    for n, line in enumerate(lines, 1):
        if line.startswith("# ") or line == "#":
            comment.append(line[2:])
            continue
        m = setting.match(line)
        assert line == "" or m, f"{path}:{n}: neither a comment nor a commented setting: {line!r}"
        if m:
            assert m.group(1) == "#", f"{path}:{n}: sets {m.group(2)} (the file sets nothing)"
            listed.append((n, m.group(2), m.group(3), " ".join(comment), line[1:]))
        comment = []
    names = [k for _, k, _, _, _ in listed]
    assert names == [k for k, _ in table], \
        f"{path} lists {names}; the table of {conf_c} has {[k for k, _ in table]} (in that order)"
    for (n, key, value, about, _), (_, default) in zip(listed, table):
        if default is None:
            assert value, f"{path}:{n}: {key} has no default: show an example value"
            assert re.search(r"\bUnset\b", about), \
                f"{path}:{n}: {key} has no default; its comment does not say what \"Unset\" means"
        else:
            assert value == default, f"{path}:{n}: #{key} = {value!r}, the table's default is {default!r}"
    _todod_accepts([setting for *_, setting in listed], f"{path} with every line uncommented")


@test
def shipped_conf_lists_every_key_commented_with_its_default():
    check_shipped_conf()


# --------------------------------------------------------------------------- todod(8)


def check_daemon_page(page=PAGE8, main_c=MAIN_C):
    opts = _getopt_options(main_c)
    sections = _sections(_render(page))
    for name in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SIGNALS", "FILES",
                 "ENVIRONMENT", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
        assert name in sections, f"todod(8) has no {name} section: {sorted(sections)}"

    synopsis = " ".join(s.strip() for s in sections["SYNOPSIS"])
    documented = {}
    for line in sections["OPTIONS"]:
        m = re.match(r"^ {7}-([A-Za-z0-9])(?: ([a-z][a-z_]*))?(?: {2,}\S.*)?$", line)
        if m:
            assert m.group(1) not in documented, f"todod(8): -{m.group(1)} documented twice"
            documented[m.group(1)] = m.group(2)

    assert set(documented) == set(opts), \
        f"todod(8) OPTIONS {sorted(documented)} vs getopt string of daemon/main.c {sorted(opts)}"
    for letter, takes_arg in opts.items():
        arg = documented[letter]
        assert bool(arg) == takes_arg, \
            f"todod(8): -{letter} is documented {'with' if arg else 'without'} an argument; " \
            f"getopt says it takes {'one' if takes_arg else 'none'}"
        form = f"[-{letter} {arg}]" if takes_arg else f"[-{letter}]"
        assert form in synopsis, f"todod(8) SYNOPSIS lacks {form}: {synopsis!r}"
    return documented


@test
def manpage_daemon_documents_every_option():
    check_daemon_page()


@test
def manpages_carry_the_version_of_the_makefile():
    with open(MAKEFILE, encoding="utf-8") as f:
        version = re.search(r"(?m)^VERSION\s*:?=\s*(\S+)", f.read()).group(1)
    for page in PAGES:
        with open(page, encoding="utf-8") as f:
            th = re.search(r'(?m)^\.TH\s+\S+\s+\d\s+\S+\s+"todod ([^"]+)"', f.read())
        assert th, f"{page}: no .TH line naming \"todod VERSION\""
        assert th.group(1) == version, \
            f"{page}: .TH says todod {th.group(1)}, the Makefile's VERSION is {version}"


# --------------------------------------------------------------------------- formatting


def check_no_warnings(page):
    r = _run([_tool("man"), "--warnings", "-l", page])
    assert r.returncode == 0 and not r.stderr.strip(), \
        f"man --warnings -l {page}: exit {r.returncode}\n{r.stderr}"
    assert "NAME" in r.stdout, f"man -l {page} printed no page"
    r = _run([_tool("groff"), "-ww", "-z", "-man", page])
    assert r.returncode == 0 and not r.stderr.strip(), \
        f"groff -ww -z -man {page}: exit {r.returncode}\n{r.stderr}"


@test
def manpages_format_without_warnings():
    for page in PAGES:
        check_no_warnings(page)


def check_width(page, width=WIDTH):
    env = dict(MAN_ENV, MANWIDTH=str(width))
    r = _run([_tool("man"), "-l", page], env=env)
    assert r.returncode == 0 and not r.stderr.strip(), f"man -l {page}: {r.stderr}"
    long_lines = [ln for ln in r.stdout.splitlines() if len(ln) > width]
    assert not long_lines, \
        f"{page} at {width} columns has lines wider than that:\n" + "\n".join(long_lines)


@test
def manpages_fit_80_columns():
    for page in PAGES:
        check_width(page)


# --------------------------------------------------------------------------- install


@test
def make_install_puts_the_manpages_under_share_man():
    binary = os.path.abspath(env.TODOD_BIN)
    assert os.access(binary, os.X_OK), f"{binary} is not built"
    build = os.path.dirname(binary)
    dest = tempfile.mkdtemp(prefix="todod-install-man-")
    # `install` depends on $(B)/todod: name the tree under test, and -o keeps make
    # from rebuilding it (a sanitizer binary must not be rebuilt without SAN=1).
    make = ["make", "-s", "PREFIX=/usr", "DESTDIR=" + dest, "BUILD=" + build, "-o", binary]
    try:
        r = subprocess.run(make + ["install"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"make install: exit {r.returncode}\n{r.stdout}{r.stderr}"
        mandir = os.path.join(dest, "usr", "share", "man")
        for src, rel in ((PAGE8, "man8/todod.8"), (PAGE5, "man5/todod.conf.5")):
            path = os.path.join(mandir, rel)
            assert os.path.isfile(path), \
                f"make install did not install {rel}: {sorted(_tree(dest))}"
            mode = os.stat(path).st_mode & 0o7777
            assert mode == 0o644, f"{rel} installed with mode {mode:o}, want 644"
            with open(src, "rb") as a, open(path, "rb") as b:
                assert a.read() == b.read(), f"installed {rel} differs from {src}"
        # man finds them there by name and section.
        for section, name, rel in (("8", "todod", "man8/todod.8"),
                                   ("5", "todod.conf", "man5/todod.conf.5")):
            w = _run([_tool("man"), "-M", mandir, "-w", section, name])
            assert w.returncode == 0 and w.stdout.strip() == os.path.join(mandir, rel), \
                f"man -M {mandir} -w {section} {name}: {w.stdout}{w.stderr}"

        r = subprocess.run(make + ["uninstall"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"make uninstall: exit {r.returncode}\n{r.stdout}{r.stderr}"
        left = [p for p in _tree(dest) if "/share/man/" in p]
        assert not left, f"make uninstall left {left}"
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def _tree(root):
    return ["/" + os.path.relpath(os.path.join(d, f), root)
            for d, _, files in os.walk(root) for f in files]
