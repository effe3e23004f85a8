"""The top of a py-spy profile of one benchmark step, kept beside its figures in bench/results/.

``profile(name, argv)`` runs ``python argv…`` under ``py-spy record`` (samples of the threads holding
the GIL, where Python's time goes), then writes the functions with the most samples of their own and the
most samples in all to ``bench/results/NAME.profile.txt``. Without py-spy (``pip install -e .[bench]``)
it says so and the benchmark's figures are written all the same.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def profile(name: str, argv: list[str], *, top: int = 25) -> Path | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print(f"py-spy is not installed (pip install -e '.[bench]'): no profile of {name}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.txt"
        subprocess.run([spy, "record", "--gil", "--format", "raw", "--rate", "200", "--output", str(raw), "--",
                        sys.executable, *argv], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = summarize(raw.read_text(), top=top)
    out = RESULTS / f"{name}.profile.txt"
    out.write_text(f"py-spy record --gil: python {' '.join(argv)}\n\n{text}")
    print(f"profile of {name}: {out}")
    return out


def summarize(collapsed: str, *, top: int) -> str:
    """Self and total shares of the samples, by function and file, from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    lines = [f"{samples} samples", "", "own time:"]
    lines += [f"{count / samples:6.1%}  {frame}" for frame, count in own.most_common(top)]
    lines += ["", "in all (with what it calls):"]
    lines += [f"{count / samples:6.1%}  {frame}" for frame, count in total.most_common(top)]
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> str:
    """``function (path:line)`` as ``function (file)``."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else function
