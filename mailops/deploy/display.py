"""What plan and apply show: a live per-host progress table (on a terminal),
the plans, and the summary. Every function takes the console to print on."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from mailops.deploy.executor import Outcome
from mailops.deploy.plan import HostPlan

if TYPE_CHECKING:  # rich loads when something is drawn (a no-op apply draws nothing)
    from rich.console import Console
    from rich.table import Table

STATUS_STYLE = {
    "in sync": "green",
    "applied": "green",
    "changes": "yellow",
    "rolled back": "red",
    "error": "red",
    "failed": "red",
}
SYMBOL = {"create": "+", "update": "~", "delete": "-"}


class LiveProgress:
    """(host, stage) updates from any thread; drawn live only on a terminal."""

    def __init__(self, console: Console, host_ids: list[str]):
        self.console = console
        self.stages = {h: "waiting" for h in host_ids}
        self.since = {h: time.monotonic() for h in host_ids}
        self.lock = threading.Lock()
        self.live = None  # a rich Live, only on a terminal

    def __call__(self, host_id: str, stage: str) -> None:
        with self.lock:
            self.stages[host_id] = stage

    def _table(self) -> Table:
        from rich.markup import escape
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        with self.lock:
            for host, stage in self.stages.items():
                style = STATUS_STYLE.get(stage, "cyan")
                spent = time.monotonic() - self.since[host]
                table.add_row(escape(host), f"[{style}]{escape(stage)}[/]", f"{spent:5.1f}s")
        return table

    def start(self) -> None:
        if self.console.is_terminal and self.live is None:
            from rich.live import Live  # only here: a pipe never pays for it

            self.live = Live(
                get_renderable=self._table,
                # the CLI's console is made on first use (cli.LazyConsole): Live needs rich's own
                console=getattr(self.console, "console", self.console),
                refresh_per_second=8,
                transient=True,
            )
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def __enter__(self) -> LiveProgress:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _counts(plan: HostPlan) -> str:
    parts = []
    for action, word in (("create", "to create"), ("update", "to update"), ("delete", "to delete")):
        n = sum(c.action == action for c in plan.changes)
        if n:
            parts.append(f"{n} {word}")
    if plan.install:
        parts.append(plan.install.describe())
    if plan.handler:
        parts.append(f"then {plan.handler}")
    return ", ".join(parts)


def print_plan(console: Console, outcome: Outcome, show_diff: bool) -> None:
    from rich.markup import escape

    plan = outcome.plan
    if plan is None:
        return
    if plan.empty:
        console.print(f"[green]{escape(plan.host_id)}[/]: in sync")
        return
    console.print(f"[bold]{escape(plan.host_id)}[/]: {escape(_counts(plan))}")
    for change in plan.changes:
        extra = f"  ({', '.join(change.reasons)})" if change.reasons else ""
        secret = "  [dim](secret)[/]" if change.secret and change.action != "delete" else ""
        console.print(f"  {SYMBOL[change.action]} {escape(change.path)}{escape(extra)}{secret}")
        for line in change.summary:
            console.print(f"      {escape(line)}", markup=True)
        if show_diff and change.diff:
            for line in change.diff.rstrip("\n").splitlines():
                style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1], "")
                text = escape("      " + line)
                console.print(f"[{style}]{text}[/]" if style else text)
    for note in plan.notes:
        console.print(f"  [yellow]note[/]: {escape(note)}")


def print_plans(console: Console, outcomes: list[Outcome], show_diff: bool) -> None:
    from rich.markup import escape

    for outcome in outcomes:
        if outcome.plan is not None:
            print_plan(console, outcome, show_diff)
        else:
            console.print(f"[red]{escape(outcome.host_id)}[/]: {escape(outcome.message)}")


def print_summary(console: Console, outcomes: list[Outcome]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=None, box=None, pad_edge=False)
    table.add_column("host")
    table.add_column("result")
    table.add_column("time", justify="right")
    table.add_column("")
    for o in outcomes:
        style = STATUS_STYLE.get(o.status, "")
        detail = o.message or "; ".join(o.warnings)
        table.add_row(
            escape(o.host_id), f"[{style}]{o.status}[/]", f"{o.seconds:.2f}s", escape(detail)
        )
    console.print(table)
