"""Prometheus text for the tests: parse an exposition, read a sample's value."""


def _parse_labels(s, i):
    """Parse '{a="x",b="y"}' starting at s[i] == '{'; return (dict, index after '}')."""
    labels = {}
    i += 1
    n = len(s)
    while True:
        while i < n and s[i] in " \t,":
            i += 1
        if i >= n:
            raise ValueError("unterminated label set: " + s)
        if s[i] == "}":
            return labels, i + 1
        j = s.index("=", i)
        key = s[i:j].strip()
        i = j + 1
        while s[i] in " \t":
            i += 1
        if s[i] != '"':
            raise ValueError("label value not quoted: " + s)
        i += 1
        val = []
        while s[i] != '"':
            if s[i] == "\\":
                i += 1
                val.append({"n": "\n", "\\": "\\", '"': '"'}.get(s[i], "\\" + s[i]))
            else:
                val.append(s[i])
            i += 1
        labels[key] = "".join(val)
        i += 1


def parse_metrics(text):
    """Prometheus text format -> list of (sample name, labels dict, float value)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and (space == -1 or brace < space):
            name = line[:brace]
            labels, i = _parse_labels(line, brace)
            rest = line[i:].split()
        else:
            name, *rest = line.split()
            labels = {}
        if not rest:
            raise ValueError("sample without a value: " + line)
        v = rest[0]
        value = {"+Inf": float("inf"), "-Inf": float("-inf"), "NaN": float("nan")}.get(v)
        out.append((name, labels, float(v) if value is None else value))
    return out


def metric(text, name, labels=None, default=KeyError):
    """The value of sample `name` in Prometheus text: the sum over the samples whose
    labels include `labels` (a dict subset). 0.0 when samples of that name exist but
    none matches the labels; when there is no sample of that name at all, `default`
    if given, else KeyError."""
    labels = labels or {}
    total = 0.0
    seen = False
    for n, ls, v in parse_metrics(text):
        if n != name:
            continue
        seen = True
        if all(ls.get(k) == str(val) for k, val in labels.items()):
            total += v
    if not seen:
        if default is KeyError:
            raise KeyError("no metric named %s in the exposition" % name)
        return default
    return total
