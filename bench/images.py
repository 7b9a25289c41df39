"""Benchmark: the images' sizes and build times, built in one run on the local base.

What it measures: each image target built from this checkout (the way the tests build
them: ``localbase/debian:bookworm``, the classic builder, stand-in runner tarballs), on
a dockerd of its own; its size as ``docker image inspect`` reports it, against the base
image measured in the same run; for the agent also the venv (``du -sb``), since its
target is agent <= 1.3x (base + venv). Build times are wall clock on this machine, in
build order (later targets reuse earlier stages' layers), for orientation only.
Nothing is asserted: the table says whether the target is met (tests/container/test_sizes
asserts the agent's, which is deterministic).

Run as root: ``.venv/bin/python bench/images.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchkit import met  # noqa: E402
from tests.support import docker, images  # noqa: E402

MIB = 1024 * 1024


def main() -> int:
    with docker.engine() as eng:
        built = images.Images(engine=eng, base=docker.base_image(eng))
        tags = [
            ("agent", built.agent),
            ("engine", built.engine_image),
            ("hook", built.hook),
            ("runner", built.runner),
            ("runner-gpu", lambda: built.runner(target="runner-gpu")),
        ]
        rows = [(name, build()) for name, build in tags]
        base = built.size(built.base)
        sizes = images.agent_sizes(built)
        print(f"{'image':<12} {'size MiB':>9} {'x base':>7} {'build s':>8}")
        print(f"{'base':<12} {base / MIB:>9.1f} {1.0:>7.2f} {'-':>8}")
        for name, tag in rows:
            size = built.size(tag)
            print(
                f"{name:<12} {size / MIB:>9.1f} {size / base:>7.2f} "
                f"{built.seconds.get(tag, 0.0):>8.1f}"
            )
        print()
        print(f"agent venv: {sizes.venv / MIB:.1f} MiB; {sizes.describe()}")
        print(f"target agent <= 1.3x (base + venv): {met(sizes.ratio <= 1.3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
