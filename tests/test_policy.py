"""The suite's own policy (tests/conftest.py): a leaky test fails, and a skip under
CI=true is a failure."""

from __future__ import annotations

import pytest


def test_the_pending_task_fixture_fails_a_leaky_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import _no_pending_tasks  # noqa: F401\n")
    pytester.makepyfile(
        """
        import asyncio

        async def test_leaks():
            asyncio.get_running_loop().create_task(asyncio.sleep(5), name="leaked-sleep")
        """
    )
    result = pytester.runpytest_subprocess("-p", "asyncio", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*left asyncio tasks pending: leaked-sleep*"])


def test_a_skip_under_ci_is_a_failure(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest("from tests.conftest import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(
        """
        import pytest

        def test_skips():
            pytest.skip("no docker here")
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-o", "asyncio_default_fixture_loop_scope=function"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*skipped under CI=true*no docker here*"])
