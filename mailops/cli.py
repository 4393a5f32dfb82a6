"""The `mailops` command line: the only module that knows about the terminal.

Exit codes: 0 ok; 1 findings or changes refused; 2 usage or spec error.
Every reporting command has --json. A MailopsError becomes one line on stderr.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from mailops.errors import MailopsError, SpecError, UsageError
from mailops.spec.diagnostics import Diagnostic


class LazyConsole:
    """rich's Console, made on first use. A line without markup goes straight
    to the stream, so a command that only says "in sync" to a pipe or a
    terminal never imports rich (a tenth of the time of a no-op apply)."""

    def __init__(self, stderr: bool = False):
        self.stderr = stderr
        self._console = None

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self.stderr, highlight=False, soft_wrap=True)
        return self._console

    @property
    def is_terminal(self) -> bool:
        if self._console is None and not _forced_terminal():
            return self._stream().isatty()
        return self.console.is_terminal

    def _stream(self):
        return sys.stderr if self.stderr else sys.stdout

    def print(self, *objects, markup: bool | None = None, **options) -> None:
        plain = markup is False and not options and all(isinstance(o, str) for o in objects)
        if plain and self._console is None:
            stream = self._stream()
            stream.write(" ".join(objects) + "\n")
            stream.flush()
        else:
            self.console.print(*objects, markup=markup, **options)

    def __getattr__(self, name: str):
        return getattr(self.console, name)


def _forced_terminal() -> bool:
    """Variables that change what rich takes for a terminal: rich decides then."""
    return "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ


app = typer.Typer(
    name="mailops",
    help="Declarative self-hosted mail: validate, render, apply and audit one YAML spec.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = LazyConsole()
err = LazyConsole(stderr=True)

# What is left at exit is freed with the process: spare the collector a last
# walk over every object the imports made (~0.1 s at the end of each command).
atexit.register(gc.freeze)

SpecArg = Annotated[Path, typer.Argument(help="The spec file (YAML).", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _version(value: bool) -> None:
    if value:
        from mailops import __version__

        out.print(f"mailops {__version__}", markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """mailops: one YAML file describes a mail service; mailops makes it so."""


def print_diagnostics(diagnostics: list[Diagnostic]) -> None:
    if not diagnostics:
        return
    from rich.markup import escape

    for d in diagnostics:
        style = "red" if d.severity == "error" else "yellow"
        where = escape(f"{d.file}:{d.line}:{d.col}: ")
        err.print(f"{where}[{style}]{d.severity}[/{style}]: ", end="")
        err.print(d.message, markup=False)


# ---------------------------------------------------------------- validate


@app.command()
def validate(
    spec: SpecArg,
    as_json: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings as failures.")] = False,
) -> None:
    """Check a spec: exit 0 valid, 1 warnings under --strict, 2 errors."""
    from mailops.spec.load import check_spec

    loaded, diagnostics = check_spec(spec)
    n_err = sum(d.severity == "error" for d in diagnostics)
    n_warn = len(diagnostics) - n_err
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "valid": loaded is not None,
                    "errors": n_err,
                    "warnings": n_warn,
                    "diagnostics": [d.as_dict() for d in diagnostics],
                }
            )
        )
    else:
        print_diagnostics(diagnostics)
        if loaded is not None:
            s = loaded.spec
            users = sum(len(d.users) for d in s.domains.values())
            out.print(
                f"{spec}: valid — {len(s.hosts)} host(s), {len(s.domains)} domain(s), "
                f"{users} user(s), {n_warn} warning(s)",
                markup=False,
            )
        else:
            err.print(f"{spec}: {n_err} error(s), {n_warn} warning(s)", markup=False)
    if loaded is None:
        raise typer.Exit(2)
    if strict and n_warn:
        raise typer.Exit(1)


# ---------------------------------------------------------------- schema


@app.command()
def schema(
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the JSON Schema of the spec (for editors and CI)."""
    from mailops.files import write_atomic
    from mailops.spec.schema import schema_text

    text = schema_text()
    if out_file is None:
        sys.stdout.write(text)
    else:
        write_atomic(out_file, text.encode())
        err.print(f"wrote {out_file}", markup=False)


# ---------------------------------------------------------------- init


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the spec in.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing spec.")] = False,
) -> None:
    """Write a commented starter spec (mailops.yaml) that validates."""
    from importlib.resources import files

    from mailops.files import write_atomic

    target = directory / "mailops.yaml"
    if target.exists() and not force:
        raise MailopsError(f"{target} already exists (use --force to overwrite it)")
    text = files("mailops").joinpath("templates/init.yaml").read_bytes()
    directory.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    out.print(f"wrote {target}; next: mailops validate {target}", markup=False)


# ---------------------------------------------------------------- hash-password


@app.command("hash-password")
def hash_password_cmd(
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Print an {ARGON2ID} hash for password_hash (prompts twice, without echo)."""
    import getpass

    from mailops.passwords import hash_password

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            raise MailopsError("no terminal to prompt on; use --stdin to read the password")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise MailopsError("the two passwords differ; nothing was hashed")
    if not password:
        raise MailopsError("the password is empty; nothing was hashed")
    out.print(hash_password(password), markup=False)


# ---------------------------------------------------------------- dns


@app.command()
def dns(
    spec: SpecArg,
    zone: Annotated[
        str | None, typer.Option("--zone", help="Only this zone (a name from dns.zones).")
    ] = None,
    fmt: Annotated[
        Literal["zone", "records", "json"] | None,
        typer.Option(
            "--format",
            help="zone: BIND zone file (full zones); records: lines to enter at a DNS "
            "provider; json: the record model. Default: zone for full zones, records "
            "for the rest.",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Write <zone>.zone, <zone>.records.txt and <domain>/ files here "
            "instead of printing.",
        ),
    ] = None,
) -> None:
    """Print or write every DNS record of the spec (DKIM keys are made on first use)."""
    import datetime as dt

    from mailops.render import dkim, dns_output
    from mailops.render.dns import build_dns, zone_kinds
    from mailops.spec.load import load_spec

    loaded = load_spec(spec)
    print_diagnostics(loaded.diagnostics)
    selected = dns_output.select_zones(zone_kinds(loaded.spec), zone, fmt)
    keys, key_notes = dkim.ensure_keys(loaded.spec, dkim.key_dir_for(loaded.base_dir))
    dnsset = build_dns(loaded.spec, dkim.dkim_records(keys))
    zones = [z for z in dnsset.zones if z.name in selected]
    previous = dns_output.read_previous(out_dir, zones) if out_dir is not None else {}
    # The serial's date is UTC, so two operators in different time zones agree.
    today = dt.datetime.now(dt.UTC).date()
    serials = dns_output.serials_for(zones, previous, today)
    result = dns_output.render_output(dnsset, zones, fmt, serials)
    for note in [*key_notes, *result.notes]:
        err.print(str(note), markup=False)
    if out_dir is None:
        sys.stdout.write(result.stdout)
        return
    written = dns_output.write_files(out_dir, result.files)
    err.print(f"wrote {len(written)} file(s) to {out_dir}", markup=False)


# ---------------------------------------------------------------- render


@app.command()
def render(
    spec: SpecArg,
    host: Annotated[str, typer.Option("--host", help="The host id to render for.")],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write the host's config files to.")
    ],
) -> None:
    """Write one host's runtime files (runtime.toml, passwd, aliases, keys) to a folder."""
    from mailops.render.host import render_host
    from mailops.spec.load import load_spec

    loaded = load_spec(spec)
    print_diagnostics(loaded.diagnostics)
    bundle = render_host(loaded, host)
    written = bundle.write(out_dir)
    err.print(f"wrote {len(written)} file(s) to {out_dir}", markup=False)


# ---------------------------------------------------------------- plan, apply, service, trust
# The logic lives in mailops/deploy; these commands parse options, draw and exit.

HostOpt = Annotated[
    list[str] | None,
    typer.Option("--host", help="Only this host (repeat for more); default: every host."),
]
ParallelOpt = Annotated[
    int | None,
    typer.Option("--parallel", min=1, help="Hosts at once; default: all of them."),
]
AcceptKeysOpt = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-keys",
        help="Trust and record the SSH key of hosts that known_hosts does not have yet "
        "(a changed key is still refused).",
    ),
]


def _deploy_options(host, parallel, accept_new_host_keys, verify_timeout=30.0):
    from mailops.deploy.apply import Options

    return Options(host, parallel, accept_new_host_keys, verify_timeout)


@app.command()
def plan(
    spec: SpecArg,
    host: HostOpt = None,
    as_json: JsonOpt = False,
    detailed_exitcode: Annotated[
        bool,
        typer.Option("--detailed-exitcode", help="Exit 0 when in sync, 2 when changes are due."),
    ] = False,
    parallel: ParallelOpt = None,
    accept_new_host_keys: AcceptKeysOpt = False,
) -> None:
    """Show what apply would change on each host (files with diffs, install, handlers)."""
    from mailops.deploy import display
    from mailops.deploy.apply import load_targets, plan_all

    targets = load_targets(spec, host)
    options = _deploy_options(host, parallel, accept_new_host_keys)
    with display.LiveProgress(err, [t.host_id for t in targets]) as progress:
        outcomes = plan_all(targets, options, progress)
    if as_json:
        out.print_json(json.dumps({"hosts": [o.as_dict() for o in outcomes]}))
    else:
        display.print_plans(out, outcomes, show_diff=True)
    if any(not o.ok for o in outcomes):
        raise typer.Exit(1)
    if detailed_exitcode and any(o.status == "changes" for o in outcomes):
        raise typer.Exit(2)


@app.command()
def apply(
    spec: SpecArg,
    host: HostOpt = None,
    check: Annotated[bool, typer.Option("--check", help="Plan only; change nothing.")] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the diffs of changed files.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    parallel: ParallelOpt = None,
    accept_new_host_keys: AcceptKeysOpt = False,
    verify_timeout: Annotated[
        float, typer.Option("--verify-timeout", min=1, help="Seconds to wait for verification.")
    ] = 30.0,
    as_json: JsonOpt = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Render and plan every host even when nothing changed since the last "
            "apply that found them all in sync.",
        ),
    ] = False,
) -> None:
    """Make every host match the spec: files, runtime, service; verified, else rolled back."""
    if not (check or as_json or full) and _in_sync_as_noted(spec, host, parallel):
        return
    from mailops import inputs
    from mailops.deploy import display
    from mailops.deploy.apply import apply_all, load_targets
    from mailops.spec.load import load_spec

    inputs.forget()  # what this render reads is what the in-sync memo must watch
    loaded = load_spec(spec)
    print_diagnostics(loaded.diagnostics)
    targets = load_targets(loaded, host)
    options = _deploy_options(host, parallel, accept_new_host_keys, verify_timeout)
    refused: list[str] = []
    progress = display.LiveProgress(err, [t.host_id for t in targets])

    def confirm(outcomes) -> bool:
        progress.stop()
        if not as_json:
            display.print_plans(out, outcomes, show_diff=diff)
        changed = sum(o.status == "changes" for o in outcomes)
        if yes:
            progress.start()
            return True
        if not sys.stdin.isatty():
            refused.append("not a terminal to ask on: pass --yes to apply; nothing was changed")
            return False
        if not typer.confirm(f"Apply these changes to {changed} host(s)?", default=False):
            refused.append("not applied; nothing was changed")
            return False
        progress.start()
        return True

    with progress:
        outcomes = apply_all(targets, options, progress, confirm, check=check)
    if not (check or refused) and all(o.status == "in sync" for o in outcomes):
        from mailops.deploy import memo

        memo.record(spec, host, loaded.diagnostics, targets, outcomes)
    _report_apply(loaded, targets, outcomes, as_json, check, refused)


def _in_sync_as_noted(spec: Path, host: list[str] | None, parallel: int | None) -> bool:
    """The in-sync memo's shortcut (deploy/memo.py): True when every host gave
    the facts it gave when the last apply found it in sync, from the same inputs."""
    from mailops import entry
    from mailops.deploy import memo

    started, noted = entry.early_replay(spec, host)  # the answer asked for ahead, if any
    if not started:
        noted = memo.replay(spec, host, parallel)
    if noted is None:
        return False
    print_diagnostics(noted.warnings)
    out.print(f"{noted.hosts} host(s) in sync; nothing to do", markup=False)
    return True


def _report_apply(loaded, targets, outcomes, as_json: bool, check: bool, refused) -> None:
    from mailops.deploy import display
    from mailops.deploy.welcome import first_steps

    if as_json:
        out.print_json(json.dumps({"hosts": [o.as_dict() for o in outcomes], "refused": refused}))
    elif check:
        display.print_plans(out, outcomes, show_diff=True)
    elif refused:
        err.print(f"mailops: {refused[0]}", markup=False)
    elif all(o.status == "in sync" for o in outcomes):
        out.print(f"{len(outcomes)} host(s) in sync; nothing to do", markup=False)
    else:
        display.print_summary(out, outcomes)
        for target, outcome in zip(targets, outcomes, strict=True):
            if outcome.status == "applied" and target.ssh is None:
                out.print(first_steps(loaded, target.layout), markup=False)
    if refused or any(not o.ok for o in outcomes):
        raise typer.Exit(1)


@app.command()
def service(
    spec: SpecArg,
    action: Annotated[str, typer.Argument(help="start, stop, status, restart or reload.")],
    host: HostOpt = None,
    as_json: JsonOpt = False,
    accept_new_host_keys: AcceptKeysOpt = False,
) -> None:
    """Start, stop, restart or reload the runtime on the hosts, or show its status."""
    from mailops.deploy import display
    from mailops.deploy.apply import load_targets
    from mailops.deploy.service import ACTIONS, service_all

    if action not in ACTIONS:
        raise UsageError(f"unknown action {action!r} (one of: {', '.join(ACTIONS)})")
    targets = load_targets(spec, host)
    options = _deploy_options(host, None, accept_new_host_keys)
    with display.LiveProgress(err, [t.host_id for t in targets]) as progress:
        results = service_all(targets, action, options, progress)
    if as_json:
        out.print_json(json.dumps({"hosts": [r.as_dict() for r in results]}))
    else:
        for r in results:
            out.print(f"{r.host_id}: {r.message}", markup=False)
            for warning in r.warnings:
                err.print(f"{r.host_id}: warning: {warning}", markup=False)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def trust(
    spec: SpecArg,
    host: Annotated[str, typer.Argument(help="The host id whose SSH key to trust.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Trust without asking.")] = False,
) -> None:
    """Show a host's SSH key fingerprint and add it to the spec's known_hosts."""
    from mailops.deploy.targets import select_hosts, ssh_target
    from mailops.deploy.trust import trust as trust_host
    from mailops.spec.load import load_spec

    loaded = load_spec(spec)
    (host_id,) = select_hosts(loaded, [host])

    def confirm(described: str) -> bool:
        out.print(f"{host_id}: {described}", markup=False)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("not a terminal to ask on: pass --yes to trust this key")
        return typer.confirm("Trust this key?", default=False)

    out.print(trust_host(ssh_target(loaded, host_id), confirm), markup=False)


# ---------------------------------------------------------------- audit
# The logic lives in mailops/audit; this command parses options, prints and exits.


def _many(help_text: str, flag: str):
    return Annotated[list[str] | None, typer.Option(flag, help=help_text)]


@app.command()
def audit(
    spec: SpecArg,
    host: _many("Only this host (repeat for more).", "--host") = None,
    domain: _many("Only this domain (repeat for more).", "--domain") = None,
    resolver: Annotated[
        str | None, typer.Option("--resolver", help="Resolver IP[:PORT]; default: resolv.conf's.")
    ] = None,
    authoritative: _many(
        "Ask this server (IP[:PORT]) for every zone instead of the zones' NS.", "--authoritative"
    ) = None,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="Also trust these CAs.")] = None,
    only: _many("Only these parts: dns, probes, drift (repeat for more).", "--only") = None,
    e2e: Annotated[bool, typer.Option("--e2e", help="Also send a message and find it.")] = False,
    as_user: _many("End-to-end as user@domain (password: MAILOPS_AUDIT_PASSWORD).", "--as") = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds per step.")] = 5.0,
    as_json: JsonOpt = False,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also write JUnit XML.")] = None,
) -> None:
    """Check live DNS, ports, TLS, relaying and hosts against the spec: exit 1 on failures."""
    from mailops.audit import report
    from mailops.audit.context import AuditOptions
    from mailops.audit.run import run_audit
    from mailops.files import write_atomic
    from mailops.spec.load import load_spec

    loaded = load_spec(spec)
    print_diagnostics(loaded.diagnostics)
    options = AuditOptions(
        host, domain, resolver, authoritative or [], ca_file, only, e2e, as_user or [],
        timeout=timeout,
    )  # fmt: skip
    result = run_audit(loaded, options)
    if junit is not None:
        write_atomic(junit, report.junit_xml(result))
    if as_json:
        sys.stdout.write(report.json_text(result) + "\n")
    else:
        report.print_table(out, result)
    if result.failed:
        raise typer.Exit(1)


# ---------------------------------------------------------------- serve and queue

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", help="The runtime's runtime.toml."),
]


@app.command()
def serve(config: ConfigOpt = Path("/etc/mailops/runtime.toml")) -> None:
    """Run the mail runtime: SMTP, submission (and IMAP/POP3 as they land)."""
    import asyncio

    from mailops.runtime.server import serve as run

    asyncio.run(run(config))


queue_app = typer.Typer(help="Inspect and manage the outbound queue.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")


@queue_app.command("list")
def queue_list(config: ConfigOpt = Path("/etc/mailops/runtime.toml"), as_json: JsonOpt = False):
    """List messages waiting in the queue."""
    import dataclasses
    import datetime as dt

    from mailops.runtime.config import load_config
    from mailops.runtime.queue import Queue

    entries = Queue(load_config(config).data_dir).list()
    if as_json:
        out.print_json(json.dumps([dataclasses.asdict(e) for e in entries]))
        return
    for e in entries:
        created = dt.datetime.fromtimestamp(e.created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        out.print(
            f"{e.id}  {created}  {e.size:>8}  <{e.sender}> → {', '.join(e.recipients)}"
            + (f"  ({e.attempts} attempts; {e.last_error})" if e.attempts else ""),
            markup=False,
        )
    err.print(f"{len(entries)} message(s) in the queue", markup=False)


QueueIdArg = Annotated[str, typer.Argument(help="The entry's id (from `mailops queue list`).")]


@queue_app.command("show")
def queue_show(
    queue_id: QueueIdArg,
    config: ConfigOpt = Path("/etc/mailops/runtime.toml"),
    as_json: JsonOpt = False,
):
    """Show one entry: envelope, retry state and the message's headers."""
    import dataclasses

    from mailops.runtime.config import load_config
    from mailops.runtime.delivery import admin

    entry, head = admin.show(load_config(config), queue_id)
    if as_json:
        data = dataclasses.asdict(entry) | {"pending": list(entry.pending), "headers": head}
        out.print_json(json.dumps(data))
        return
    lines = [
        f"id:        {entry.id}",
        f"sender:    <{entry.sender}>",
        f"pending:   {', '.join(entry.pending) or '-'}",
        f"done:      {', '.join(entry.done) or '-'}",
        f"size:      {entry.size}",
        f"attempts:  {entry.attempts}",
    ]
    if entry.last_error:
        lines.append(f"last error: {entry.last_error}")
    out.print("\n".join(lines) + "\n\n" + head, markup=False)


@queue_app.command("flush")
def queue_flush(config: ConfigOpt = Path("/etc/mailops/runtime.toml")):
    """Ask the running runtime to retry every queued message now (SIGUSR1)."""
    from mailops.runtime.config import load_config
    from mailops.runtime.delivery import admin

    pid = admin.flush(load_config(config))
    err.print(f"asked the runtime (pid {pid}) to retry the queue now", markup=False)


@queue_app.command("delete")
def queue_delete(queue_id: QueueIdArg, config: ConfigOpt = Path("/etc/mailops/runtime.toml")):
    """Delete one entry without telling anyone (see `bounce` to tell the sender)."""
    from mailops.runtime.config import load_config
    from mailops.runtime.delivery import admin

    admin.delete(load_config(config), queue_id)
    err.print(f"deleted {queue_id}", markup=False)


@queue_app.command("bounce")
def queue_bounce(queue_id: QueueIdArg, config: ConfigOpt = Path("/etc/mailops/runtime.toml")):
    """Return one entry to its sender now (a DSN), and delete it."""
    from mailops.runtime.config import load_config
    from mailops.runtime.delivery import admin

    count = admin.bounce(load_config(config), queue_id)
    err.print(f"bounced {queue_id} ({count} recipient(s)) to its sender", markup=False)


# ---------------------------------------------------------------- entry point


def main() -> None:
    """Entry point: click handles usage errors (exit 2); ours become one line."""
    try:
        app()
    except SpecError as exc:
        print_diagnostics(exc.diagnostics)
        sys.exit(exc.exit_code)
    except MailopsError as exc:
        err.print(f"mailops: error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except Exception as exc:
        # A bug of ours. Say so in one line; MAILOPS_DEBUG=1 shows the traceback.
        if os.environ.get("MAILOPS_DEBUG"):
            raise
        err.print(
            f"mailops: internal error: {type(exc).__name__}: {exc} "
            "(please report it; MAILOPS_DEBUG=1 shows the details)",
            markup=False,
        )
        sys.exit(70)
