"""How well ``agents.pii`` does on the labelled set shipped beside it (``pii_corpus.jsonl``).

Each line of the set is one utterance as a voice call's transcript renders it, with the exact
spans and types of the personal data in it (``form``: written, spoken or negative — a negative
has numbers but no personal data). Scoring is per entity: a found entity is right when it
overlaps an expected one of the same type (each expected entity counts once); the rest of the
found ones are false positives, the expected ones left unmatched are misses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents import pii

CORPUS_PATH = Path(__file__).with_name("pii_corpus.jsonl")
FORMS = ("written", "spoken", "negative")


@dataclass(frozen=True)
class Example:
    id: int
    form: str
    text: str
    entities: tuple[pii.Entity, ...]


def corpus_load(path: Path = CORPUS_PATH) -> list[Example]:
    """The labelled set; a malformed line is an error naming it (the set is ours)."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        row: dict[str, Any] = json.loads(line)
        text = row["text"]
        entities = []
        for entity in row["entities"]:
            if (
                entity["type"] not in pii.TYPES
                or text[entity["start"] : entity["end"]] != entity["value"]
            ):
                raise ValueError(f"{path.name} line {number}: bad entity {entity!r}")
            entities.append(pii.Entity(entity["start"], entity["end"], entity["type"]))
        if row["form"] not in FORMS or (row["form"] == "negative") == bool(entities):
            raise ValueError(f"{path.name} line {number}: form {row['form']!r} and entities")
        examples.append(Example(row["id"], row["form"], text, tuple(entities)))
    return examples


@dataclass
class Counts:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


@dataclass
class Report:
    by_type: dict[str, Counts] = field(default_factory=lambda: {t: Counts() for t in pii.TYPES})
    by_form: dict[str, Counts] = field(default_factory=lambda: {f: Counts() for f in FORMS})
    overall: Counts = field(default_factory=Counts)
    examples: int = 0
    mistakes: list[str] = field(default_factory=list)


def _overlaps(a: pii.Entity, b: pii.Entity) -> bool:
    return a.start < b.end and b.start < a.end


def evaluate(examples: list[Example]) -> Report:
    report = Report(examples=len(examples))
    for example in examples:
        found = pii.find(example.text)
        unmatched = list(example.entities)
        for entity in found:
            match = next(
                (g for g in unmatched if g.type == entity.type and _overlaps(g, entity)), None
            )
            if match is not None:
                unmatched.remove(match)
                outcome = "true_positives"
            else:
                outcome = "false_positives"
                report.mistakes.append(
                    f"#{example.id} false {entity.type}: {entity.text_in(example.text)!r}"
                )
            for counts in (report.by_type[entity.type], report.by_form[example.form]):
                setattr(counts, outcome, getattr(counts, outcome) + 1)
            setattr(report.overall, outcome, getattr(report.overall, outcome) + 1)
        for missed in unmatched:
            report.mistakes.append(
                f"#{example.id} missed {missed.type}: {missed.text_in(example.text)!r}"
            )
            for counts in (
                report.by_type[missed.type],
                report.by_form[example.form],
                report.overall,
            ):
                counts.false_negatives += 1
    return report
