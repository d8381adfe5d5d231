"""Accuracy of nbhelpers.diagnose.diagnose_text on the real error excerpts, per kind and set.

tests/data/error_excerpts.json holds excerpts copied from public issues, forums and docs, split
once by source thread into a development set and a held-out set; the rules' author read both,
so the held-out figure is optimistic. Blind rounds (error_excerpts_blind.json is round 1,
error_excerpts_blindN.json round N) are collected by someone who never saw the rules and scored
once; a round's file then gets a "scored" note: {"note": prose, "rules_commit", "correct",
"total", "per_kind": {kind: [correct, total]}, "used_for_development"}. A round tuned on since
(used_for_development true) is development data and held to the bar; one scored but not tuned on
is a measurement (its once-only figure stands; the rules are not re-tuned to it); one without a
"scored" note is never seen, and its figure is the one to report. `--misses SPLIT` lists the
misses of one set (only of sets the rules' author has seen: asking for a never-seen round's
would tune on it).

    NBH_EXCLUDE_BLIND=5 python benchmarks/diagnosis_accuracy.py [--misses development]

NBH_EXCLUDE_BLIND names rounds (comma-separated numbers) whose files are not opened at all: a
round still being collected, or one whose once-only scoring is not due yet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent.parent / "tests" / "data"
DATA = DATA_DIR / "error_excerpts.json"
SPLITS = ("development", "held_out")  # the splits inside error_excerpts.json
# The bar every blind round is held to (a kind with fewer excerpts is printed, not judged: one
# miss would be 50%).
BLIND_OVERALL, BLIND_PER_KIND, BLIND_MIN_EXCERPTS = 0.9, 0.8, 3
EXCLUDE_ENV = "NBH_EXCLUDE_BLIND"  # rounds to leave unopened, e.g. "5" while round 5 is collected


@dataclass(frozen=True)
class BlindRound:
    number: int
    path: Path
    scored: dict[str, Any]  # the file's record of its one blind score; empty while never seen

    @property
    def split(self) -> str:
        return f"blind{self.number}"

    @property
    def seen(self) -> bool:
        return bool(self.scored)

    @property
    def used_for_development(self) -> bool:
        """Tuned on since its one scoring: held to the bar like the development split."""
        return isinstance(self.scored, dict) and self.scored.get("used_for_development") is True

    @property
    def once_only(self) -> str:
        """The figure of its one blind scoring ("66/74 = 89.2%"), from the "scored" note."""
        if not self.seen or scored_note_problems(self.scored):
            return ""
        right, total = self.scored["correct"], self.scored["total"]
        return f"{right}/{total} = {right / total:.1%}"

    def legend(self) -> str:
        if not self.seen:
            return f"blind round {self.number} (never seen: the figure to report)"
        once = f"scored once: {self.once_only} on {self.scored.get('rules_commit', '?')}"
        state = "now development" if self.used_for_development else \
            "a measurement, not tuned on"
        return f"blind round {self.number} ({once}; {state})"


def scored_note_problems(scored: Any, kinds: tuple[str, ...] | None = None) -> list[str]:
    """What is wrong with a round's "scored" record (empty when well-formed): its counts must
    add up per kind, name known kinds, and say which rules (a commit) were scored."""
    if not isinstance(scored, dict):
        return [f"'scored' is {type(scored).__name__}, not an object"]
    need = {"note": str, "rules_commit": str, "correct": int, "total": int, "per_kind": dict,
            "used_for_development": bool}
    problems = [f"{key} missing or not {kind.__name__}" for key, kind in need.items()
                if not isinstance(scored.get(key), kind)]
    if problems:
        return problems
    if not re.fullmatch(r"[0-9a-f]{7,40}", scored["rules_commit"]):
        problems.append(f"rules_commit {scored['rules_commit']!r} is not a commit hash")
    per_kind = scored["per_kind"]
    if bad := [k for k, v in per_kind.items() if not (isinstance(v, list) and len(v) == 2
               and all(isinstance(n, int) for n in v) and 0 <= v[0] <= v[1])]:
        problems.append(f"per_kind entries {bad} are not [correct, total]")
    elif (sum(v[0] for v in per_kind.values()), sum(v[1] for v in per_kind.values())) != \
            (scored["correct"], scored["total"]):
        problems.append("per_kind does not add up to correct/total")
    if not 0 < scored["total"] or not 0 <= scored["correct"] <= scored["total"]:
        problems.append(f"correct/total {scored['correct']}/{scored['total']} is impossible")
    if kinds is not None and (unknown := sorted(set(per_kind) - set(kinds))):
        problems.append(f"per_kind names unknown kinds {unknown}; valid: {list(kinds)}")
    return problems


def excluded_rounds(value: str | None = None) -> set[int]:
    """The round numbers NBH_EXCLUDE_BLIND names ("4" or "4,5"): rounds still being collected,
    which must not be read, let alone scored, before their one blind scoring."""
    value = os.environ.get(EXCLUDE_ENV, "") if value is None else value
    numbers = [part.strip() for part in value.split(",") if part.strip()]
    if bad := [n for n in numbers if not n.isdigit()]:
        raise ValueError(f"{EXCLUDE_ENV}={value!r}: {bad} are not round numbers; "
                         "give numbers separated by commas, e.g. 4 or 4,5")
    return {int(n) for n in numbers}


def blind_rounds(data_dir: Path = DATA_DIR, *, exclude: set[int] | None = None,
                 ) -> list[BlindRound]:
    """Every blind round whose file is present, oldest first (error_excerpts_blind.json is
    round 1), less those excluded (NBH_EXCLUDE_BLIND by default; an excluded file is not even
    opened); a round is development once its file carries a "scored" note."""
    skip = excluded_rounds() if exclude is None else exclude
    rounds = []
    for path in data_dir.glob("error_excerpts_blind*.json"):
        number = re.fullmatch(r"error_excerpts_blind(\d*)\.json", path.name)
        if number is None or int(number.group(1) or 1) in skip:
            continue
        scored = json.loads(path.read_text()).get("scored", {})
        rounds.append(BlindRound(int(number.group(1) or 1), path, scored))
    return sorted(rounds, key=lambda r: r.number)


def set_legends(rounds: list[BlindRound] | None = None) -> dict[str, str]:
    """Every set scored, in column order, with what its figure means."""
    legends = {"development": "development", "held_out": "held-out (seen by the rule author)"}
    legends.update({r.split: r.legend() for r in (blind_rounds() if rounds is None else rounds)})
    return legends


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
    legends: dict[str, str] = field(default_factory=dict)

    def overall(self, split: str) -> Score:
        scores = [s for (_, sp), s in self.per_kind.items() if sp == split]
        return Score(sum(s.right for s in scores), sum(s.total for s in scores))

    def kinds(self) -> list[str]:
        return sorted({kind for kind, _ in self.per_kind})

    def splits(self) -> list[str]:
        present = {split for _, split in self.per_kind}
        order = list(self.legends)
        return sorted(present, key=lambda s: (order.index(s) if s in order else len(order), s))

    def table(self) -> str:
        splits = self.splits()
        legend = [f"  {split}: {self.legends.get(split, split)}" for split in splits]
        rows = [f"{'kind':<20}" + "".join(f" {split:>16}" for split in splits)]
        rows += [f"{kind:<20}" + "".join(f" {self.per_kind.get((kind, split), Score())!s:>16}"
                                         for split in splits) for kind in self.kinds()]
        rows.append(f"{'overall':<20}" + "".join(f" {self.overall(split)!s:>16}"
                                                 for split in splits))
        return "\n".join(["sets:", *legend, *rows])


def load_excerpts(path: Path = DATA, *, split: str = "") -> list[dict[str, str]]:
    """A data file's excerpts; `split` labels every excerpt of a file that has no splits."""
    excerpts = json.loads(path.read_text())["excerpts"]
    return [{**excerpt, "split": split} for excerpt in excerpts] if split else excerpts


def load_all(rounds: list[BlindRound] | None = None) -> list[dict[str, str]]:
    """Every set there is: the split file and every blind round present."""
    excerpts = load_excerpts()
    for blind in blind_rounds() if rounds is None else rounds:
        excerpts += load_excerpts(blind.path, split=blind.split)
    return excerpts


def score(excerpts: list[dict[str, str]]) -> Report:
    """Names each excerpt's cause; a hit also needs evidence lines taken from the excerpt."""
    from nbhelpers.diagnose import diagnose_text

    report = Report(legends=set_legends())
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


def vocabulary_alone(excerpts: list[dict[str, str]]) -> tuple[int, int, int]:
    """The second stage on its own, on every excerpt (as if no rule had matched): how many it
    names right, names wrong, and leaves as "other". Its precision (right / named) says how
    far to trust it on text the rules miss."""
    from nbhelpers.diagnose import _vocabulary_guess

    right = wrong = abstained = 0
    for excerpt in excerpts:
        guess = _vocabulary_guess([ln.rstrip() for ln in excerpt["text"].splitlines()
                                   if ln.strip()])
        if guess is None:
            abstained += 1
        elif guess[0] == excerpt["kind"]:
            right += 1
        else:
            wrong += 1
    return right, wrong, abstained


def shortfalls(report: Report, split: str) -> list[str]:
    """What keeps a blind round under its bar: >= 90% overall, >= 80% for each kind with at
    least 3 excerpts."""
    overall = report.overall(split)
    short = [f"overall {overall}"] if overall.rate < BLIND_OVERALL else []
    short += [f"{kind} {cell}" for (kind, sp), cell in sorted(report.per_kind.items())
              if sp == split and cell.total >= BLIND_MIN_EXCERPTS
              and cell.rate < BLIND_PER_KIND]
    return short


def round_line(report: Report, blind: BlindRound) -> str:
    """A round's once-only figure, today's, and where today's stands against the bar."""
    short = shortfalls(report, blind.split)
    role = ("development" if blind.used_for_development else
            "measurement" if blind.seen else "never seen")
    return (f"{blind.split} ({role}): once-only "
            f"{blind.once_only or 'not scored yet'}; now {report.overall(blind.split)}; "
            f"{'under the bar: ' + ', '.join(short) if short else 'meets the bar'} "
            f"(>= {BLIND_OVERALL:.0%} overall, >= {BLIND_PER_KIND:.0%} per kind with "
            f">= {BLIND_MIN_EXCERPTS} excerpts)")


def main(argv: list[str] | None = None) -> int:
    rounds = blind_rounds()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--misses", choices=[*SPLITS, *(r.split for r in rounds if r.seen)],
                        help="list the misses of this set (never-seen rounds have none listed)")
    args = parser.parse_args(argv)
    excerpts = load_all(rounds)
    report = score(excerpts)
    print(report.table())
    right, wrong, abstained = vocabulary_alone(excerpts)
    print(f"second stage alone (family vocabulary, every excerpt): names {right + wrong}, "
          f"right {right} ({right / max(1, right + wrong):.1%}), leaves {abstained} as other")
    for blind in rounds:
        print(round_line(report, blind))
    for miss in report.misses:
        if miss["split"] == args.misses:
            print(f"\nmiss [{miss['kind']} -> {miss['got']}] {miss['source']}\n"
                  + "\n".join("    " + line for line in miss["text"].splitlines()[:6]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
