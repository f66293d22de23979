import sys

from django.core.management.base import BaseCommand, CommandError

from authserver import janitor
from authserver.locks import advisory_lock


class Command(BaseCommand):
    help = (
        "Delete stale grants now, in bounded batches: what the Celery jobs do. "
        "Kinds: sessions, authorization_codes, refresh_tokens, consents, deny_list, "
        "initial_access_tokens, session_clients, logout_deliveries."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run", action="store_true", help="Show the backlog; delete nothing."
        )
        parser.add_argument(
            "--only", action="append", metavar="KIND", help="Only this kind (repeatable)."
        )
        parser.add_argument("--batch-size", type=int, default=janitor.BATCH_SIZE)

    def handle(self, *args, dry_run: bool, only: list[str] | None, batch_size: int, **options):
        kinds = janitor.kinds()
        unknown = sorted(set(only or []) - set(kinds))
        if unknown:
            raise CommandError(
                f"Unknown kind(s): {', '.join(unknown)}. Choose from: {', '.join(kinds)}."
            )
        chosen = [kinds[name] for name in (only or kinds)]
        if dry_run:
            self._table(
                ["kind", "waiting", "oldest stale for"],
                [
                    [b.label, f"{b.waiting:,}", _age(b.oldest_age_seconds)]
                    for b in map(janitor.backlog, chosen)
                ],
            )
            return
        rows = []
        for kind in chosen:
            with advisory_lock(f"janitor:{kind.name}") as acquired:
                if not acquired:
                    rows.append([kind.label, "-", "-", "-", "-", "busy: a job is running"])
                    continue
                total = janitor.backlog(kind).waiting
                bar = _ProgressBar(kind.label, total, self.stderr)
                deleted, seconds, longest = 0, 0.0, 0.0
                while True:
                    result = janitor.purge(kind, batch_size=batch_size, progress=bar.advance)
                    deleted, seconds = deleted + result.deleted, seconds + result.seconds
                    longest = max(longest, result.longest_statement)
                    if not result.remaining:
                        break
                bar.finish()
            rate = f"{deleted / seconds:,.0f}" if seconds and deleted else "-"
            rows.append(
                [
                    kind.label,
                    f"{deleted:,}",
                    f"{seconds:.2f}",
                    rate,
                    f"{longest * 1000:.0f}",
                    "done",
                ]
            )
        self._table(
            ["kind", "deleted", "seconds", "rows/s", "longest statement (ms)", "state"], rows
        )

    def _table(self, header: list[str], rows: list[list[str]]) -> None:
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)
        ]
        line = "  ".join("{:<%d}" % width for width in widths)  # noqa: UP031
        self.stdout.write(line.format(*header))
        self.stdout.write(line.format(*("-" * width for width in widths)))
        for row in rows:
            self.stdout.write(line.format(*row))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


class _ProgressBar:
    """A one-line bar on stderr, redrawn in place when stderr is a terminal."""

    def __init__(self, label: str, total: int, stream):
        self.label, self.total, self.stream, self.done = label, max(total, 1), stream, 0
        self.live = getattr(sys.stderr, "isatty", lambda: False)()

    def advance(self, count: int) -> None:
        self.done += count
        if self.live:
            filled = min(30, 30 * self.done // self.total)
            self.stream.write(
                f"\r{self.label:<32} [{'#' * filled}{' ' * (30 - filled)}] {self.done:,}", ending=""
            )
            self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("")
