"""Print the score of the last `make mutation` run, from mutmut's mutants/mutmut-cicd-stats.json.

The score is killed over the mutants that were checked (killed, survived, timed out); a timeout
counts as killed (the mutant made a test hang, which a run with a deadline does notice), and
mutants no selected test reaches ("no tests") are listed apart, as gaps in the selection.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

STATS = Path("mutants/mutmut-cicd-stats.json")


def main() -> int:
    """Print killed/total and the score; 1 when there are no results yet."""
    if not STATS.exists():
        print(f"no {STATS}: run `make mutation` first", file=sys.stderr)
        return 1
    stats = json.loads(STATS.read_text())
    killed = stats["killed"] + stats["timeout"]
    checked = killed + stats["survived"]
    score = 100 * killed / checked if checked else 0.0
    print(
        f"mutation score: {killed}/{checked} killed = {score:.1f}% "
        f"(survived {stats['survived']}, timeout {stats['timeout']}, "
        f"no tests {stats['no_tests']}, not checked or other "
        f"{stats['total'] - checked - stats['no_tests']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
