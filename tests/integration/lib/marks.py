"""Test registration: @test marks a function as a test (conftest.py collects the
marked functions under their own names); @test(slow=True) marks one that
TODOD_SKIP_SLOW=1 skips and that gets three times the time-out;
@test(cases={"what_is_checked": value, ...}) makes one test per case, named
NAME[what_is_checked], each called with its value as the argument `case`. skip() and
skip_if_sanitizer() end a test as skipped (pytest is imported only then, so that
tests/soak/ can import test modules without it)."""

from lib import env


def test(fn=None, *, slow=False, cases=None):
    """Mark a test: @test, @test(slow=True), @test(cases={ID: value}). The name is
    the function name (and [ID] for each case)."""
    def mark(f):
        f.todod_test = {"slow": slow, "cases": dict(cases) if cases is not None else None}
        return f
    if fn is not None:
        return mark(fn)
    return mark


def skip(reason):
    import pytest
    pytest.skip(reason)


def skip_if_sanitizer(reason="measures memory or timing; not meaningful under sanitizers"):
    if env.SANITIZER:
        skip(reason)
