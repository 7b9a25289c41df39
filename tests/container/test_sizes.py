"""The agent image's size against what it must hold, measured in the same run: the base
image plus the venv (``du -sb /opt/runner-agent`` inside the image). Target <= 1.3x.

Sizes, unlike timings, are deterministic for one base and one set of wheels, so this is
an assertion; ``bench/images.py`` prints the table for every image.
"""

from __future__ import annotations

from tests.support import images

TARGET = 1.3


def test_the_agent_image_is_within_its_size_target(built: images.Images) -> None:
    sizes = images.agent_sizes(built)
    assert sizes.ratio <= TARGET, sizes.describe()
    # Not vacuous: the venv is there and counted.
    assert sizes.venv > 10 * 1024 * 1024, sizes.describe()
