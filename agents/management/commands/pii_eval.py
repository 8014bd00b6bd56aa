"""Precision, recall and F1 of PII detection on the labelled set; fails under the thresholds."""

from django.core.management.base import BaseCommand, CommandError

from agents.pii_evaluation import CORPUS_PATH, Counts, corpus_load, evaluate

DEFAULT_MIN_PRECISION = 0.95
DEFAULT_MIN_RECALL = 0.90


class Command(BaseCommand):
    help = (
        "Measure PII detection (entity level: same type and overlapping span) on the labelled "
        "transcript utterances; exit non-zero when overall precision or recall is below the "
        "thresholds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--min-precision", type=float, default=DEFAULT_MIN_PRECISION)
        parser.add_argument("--min-recall", type=float, default=DEFAULT_MIN_RECALL)
        parser.add_argument("--corpus", default=str(CORPUS_PATH), help="a JSONL labelled set")
        parser.add_argument("--mistakes", action="store_true", help="list each miss and false hit")

    def handle(self, *args, min_precision, min_recall, corpus, mistakes, **options):
        from pathlib import Path

        try:
            examples = corpus_load(Path(corpus))
        except (OSError, ValueError, KeyError) as error:
            raise CommandError(f"cannot load {corpus}: {error}") from error
        report = evaluate(examples)
        forms = {form: sum(1 for e in examples if e.form == form) for form in report.by_form}
        self.stdout.write(
            f"{report.examples} utterances ("
            + ", ".join(f"{count} {form}" for form, count in forms.items())
            + f"), {sum(len(e.entities) for e in examples)} entities"
        )
        self.stdout.write(
            f"{'':<14}{'precision':>10}{'recall':>8}{'f1':>8}{'tp':>5}{'fp':>4}{'fn':>4}"
        )
        for name, counts in [*report.by_type.items(), *report.by_form.items()]:
            self.stdout.write(_row(name, counts))
        self.stdout.write(_row("overall", report.overall))
        if mistakes:
            for line in report.mistakes:
                self.stdout.write(f"  {line}")
        overall = report.overall
        if overall.precision < min_precision or overall.recall < min_recall:
            raise CommandError(
                f"below thresholds: precision {overall.precision:.3f} (min {min_precision}), "
                f"recall {overall.recall:.3f} (min {min_recall})"
            )


def _row(name: str, counts: Counts) -> str:
    return (
        f"{name:<14}{counts.precision:>10.3f}{counts.recall:>8.3f}{counts.f1:>8.3f}"
        f"{counts.true_positives:>5}{counts.false_positives:>4}{counts.false_negatives:>4}"
    )
