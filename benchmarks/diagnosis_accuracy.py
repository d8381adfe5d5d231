"""Accuracy of nbhelpers.diagnose.diagnose_text on the real error excerpts, per kind and split.

tests/data/error_excerpts.json holds excerpts copied from public issues, forums and docs, split
once by source thread into a development set (rules are written and tuned on it) and a held-out
set (only ever scored). Prints one row per kind with both splits and the totals; `--misses`
lists the development excerpts named wrongly (held-out misses stay hidden unless asked for with
`--misses held_out`, which is for the final report, not for tuning).

    python benchmarks/diagnosis_accuracy.py [--misses development]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "error_excerpts.json"
SPLITS = ("development", "held_out")


@dataclass
class Score:
    right: int = 0
    total: int = 0

    @property
    def rate(self) -> float:
        return self.right / self.total if self.total else 1.0

    def __str__(self) -> str:
        return f"{self.right:3}/{self.total:<3} {self.rate:6.1%}" if self.total else "   -"


@dataclass
class Report:
    per_kind: dict[tuple[str, str], Score] = field(default_factory=lambda: defaultdict(Score))
    misses: list[dict[str, str]] = field(default_factory=list)

    def overall(self, split: str) -> Score:
        scores = [s for (_, sp), s in self.per_kind.items() if sp == split]
        return Score(sum(s.right for s in scores), sum(s.total for s in scores))

    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self.per_kind})

    def table(self) -> str:
        rows = [f"{'kind':<20} {'development':>16} {'held-out':>16}"]
        rows += [f"{kind:<20} {self.per_kind[(kind, 'development')]!s:>16} "
                 f"{self.per_kind[(kind, 'held_out')]!s:>16}" for kind in self.kinds()]
        rows.append(f"{'overall':<20} {self.overall('development')!s:>16} "
                    f"{self.overall('held_out')!s:>16}")
        return "\n".join(rows)


def load_excerpts(path: Path = DATA) -> list[dict[str, str]]:
    return json.loads(path.read_text())["excerpts"]


def score(excerpts: list[dict[str, str]]) -> Report:
    """Names each excerpt's cause; a hit also needs evidence lines taken from the excerpt."""
    from nbhelpers.diagnose import diagnose_text

    report = Report()
    for excerpt in excerpts:
        got = diagnose_text(excerpt["text"])
        cell = report.per_kind[(excerpt["kind"], excerpt["split"])]
        cell.total += 1
        if got.kind == excerpt["kind"] and got.evidence \
                and all(line in excerpt["text"] for line in got.evidence):
            cell.right += 1
        else:
            report.misses.append({**excerpt, "got": got.kind})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", choices=SPLITS, help="list the misses of this split")
    args = parser.parse_args(argv)
    report = score(load_excerpts())
    print(report.table())
    for miss in report.misses:
        if miss["split"] == args.misses:
            print(f"\nmiss [{miss['kind']} -> {miss['got']}] {miss['source']}\n"
                  + "\n".join("    " + line for line in miss["text"].splitlines()[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
