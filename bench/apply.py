"""No-op apply to 1 and to N hosts over real SSH, and a first apply, with the
same change set as an Ansible playbook side by side when ansible-playbook is
installed.

    python bench/apply.py [--hosts 20] [--runs 5] [--no-ansible]

Each host is a private sshd on 127.0.0.1 (tests/deploy/sshd.py) with its own
paths and a mailops runtime (service: process). Figures are medians of wall
time of the whole command (`mailops apply SPEC --yes`, a fresh process each
time, as a user runs it). The first applies run from a frozen copy of the
package (edits to the working tree during the run do not count as upgrades);
it builds the wheels and installs them into the hosts' shared install folder.
The no-op applies then run the `mailops` that this install put in its venv:
mailops as pip installs it, not a source tree on PYTHONPATH (whose start-up
also pays for every .pth file of the development environment).

A no-op apply takes the in-sync memo's way (deploy/memo.py) once a first
no-op has found the hosts in sync; `--full` renders and plans every host.

Ansible's playbook does the same work per host: 10 templated files (the same
sizes as mailops's config files) and a handler that reloads the runtime when
one changes; default settings, forks = number of hosts, facts gathered (as
mailops gathers its own).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.deploy import specs  # noqa: E402
from tests.deploy.sshd import ssh_servers, sshd_available  # noqa: E402

SERVICES = ("smtp", "submission", "pop3")


def freeze_code(root: Path) -> Path:
    """A copy of the mailops package: one build for the whole benchmark.

    Compiled to bytecode once, as pip does when it installs mailops: with
    PYTHONDONTWRITEBYTECODE set, every run would otherwise compile the whole
    package from source (a tenth of a second that no installed copy pays)."""
    target = root / "code"
    shutil.copytree(
        ROOT / "mailops", target / "mailops", ignore=shutil.ignore_patterns("__pycache__")
    )
    compileall.compile_dir(target, quiet=1)
    return target


def write_specs(root: Path, servers, install: Path, known: Path) -> tuple[Path, Path]:
    """one.yaml (the first host) and many.yaml (all), the first host the same in both."""
    ids = [f"h{i}" for i in range(len(servers))]
    hosts = [
        specs.host_block(h, root, install, s, services=SERVICES)
        for h, s in zip(ids, servers, strict=True)
    ]
    domains = [specs.domain_block(h) for h in ids]
    one = specs.write_spec(root / "one.yaml", hosts[0], domains[0], known)
    many = specs.write_spec(root / "many.yaml", "".join(hosts), "".join(domains), known)
    return one, many


def timed(command: list[str], env: dict, expect: str | None = None) -> float:
    started = time.perf_counter()
    # From the temp folder: `python -m` puts the working folder first on sys.path,
    # and the frozen copy must win over the live tree.
    cwd = Path(env.get("PYTHONPATH", ".")).parent
    result = subprocess.run(command, env=env, capture_output=True, text=True, cwd=cwd)
    seconds = time.perf_counter() - started
    if result.returncode != 0 or (expect and expect not in result.stdout):
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def median_of(runs: int, command: list[str], env: dict, expect: str | None = None) -> float:
    return statistics.median(timed(command, env, expect) for _ in range(runs))


# The same no-op inside one warm process: render, connect, facts, plan; without
# the cost of starting Python and importing the spec model, which every
# mailops command pays once.
IN_PROCESS = """
import resource, statistics, sys, time
from pathlib import Path
from mailops.deploy.apply import Options, apply_all, load_targets
times, cpu = [], []
for _ in range(int(sys.argv[2])):
    started, used = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    targets = load_targets(Path(sys.argv[1]), None)
    outcomes = apply_all(targets, Options(), lambda h, s: None, lambda o: True)
    times.append(time.perf_counter() - started)
    now = resource.getrusage(resource.RUSAGE_SELF)
    cpu.append(now.ru_utime + now.ru_stime - used.ru_utime - used.ru_stime)
    assert all(o.status == "in sync" for o in outcomes), [o.message for o in outcomes]
print(statistics.median(cpu), statistics.median(times))
"""


def in_process(spec: Path, runs: int, env: dict) -> tuple[float, float]:
    """(CPU seconds of mailops itself, wall seconds), medians."""
    cwd = Path(env["PYTHONPATH"]).parent
    result = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(spec), str(runs)],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
    )
    if result.returncode != 0:
        raise SystemExit(f"in-process no-op failed:\n{result.stderr}")
    cpu, wall = result.stdout.split()[-2:]
    return float(cpu), float(wall)


# ---------------------------------------------------------------- Ansible

PLAYBOOK = """\
- hosts: mail
  tasks:
{tasks}
  handlers:
    - name: reload runtime
      command: "true"
"""
TASK = """\
    - name: config file {n}
      template:
        src: {src}
        dest: "{{{{ base }}}}/ansible/file{n}.conf"
        mode: "0640"
      notify: reload runtime
"""


def ansible_setup(root: Path, servers, known: Path) -> tuple[Path, Path]:
    folder = root / "ansible"
    folder.mkdir()
    tasks = []
    for n in range(10):
        src = folder / f"file{n}.j2"
        lines = [f"# file {n} for {{{{ inventory_hostname }}}}"]
        lines += [f"key{i} = {{{{ base }}}}/value{i}" for i in range(40)]
        src.write_text("\n".join(lines) + "\n")
        tasks.append(TASK.format(n=n, src=src))
    (folder / "site.yml").write_text(PLAYBOOK.format(tasks="".join(tasks)))
    lines = ["[mail]"]
    for i, s in enumerate(servers):
        base = root / f"h{i}"
        lines.append(
            f"h{i} ansible_host=127.0.0.1 ansible_port={s.port} ansible_user=root "
            f"ansible_ssh_private_key_file={s.user_key} "
            f"ansible_python_interpreter=/usr/bin/python3 base={base}"
        )
    (folder / "hosts").write_text("\n".join(lines) + "\n")
    for i in range(len(servers)):
        (root / f"h{i}" / "ansible").mkdir(parents=True, exist_ok=True)
    return folder / "site.yml", folder / "hosts"


def ansible_env(root: Path, known: Path, forks: int) -> dict:
    return {
        **os.environ,
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known} -o ControlMaster=auto "
        "-o ControlPersist=60s",
        "ANSIBLE_LOCAL_TEMP": str(root / "ansible-tmp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
    }


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-ansible", action="store_true")
    args = parser.parse_args()
    if not sshd_available():
        raise SystemExit("needs root and OpenSSH's sshd (apt-get install openssh-server)")
    with tempfile.TemporaryDirectory(prefix="mailops-bench-") as tmp:
        root = Path(tmp)
        code = freeze_code(root)
        env = {**os.environ, "PYTHONPATH": str(code)}
        mailops = [sys.executable, "-m", "mailops"]
        with ssh_servers(args.hosts, root / "ssh") as servers:
            known = root / "known_hosts"
            known.write_text("".join(s.known_hosts_line() for s in servers))
            install = root / "opt"
            one, many = write_specs(root, servers, install, known)
            print(f"load average at start: {_load()}", flush=True)
            rows: list[tuple[str, float]] = []

            def row(name: str, seconds: float) -> float:
                rows.append((name, seconds))
                print(f"{name:<60} {seconds:8.2f}", flush=True)
                return seconds

            apply_one = [*mailops, "apply", str(one), "--yes"]
            apply_many = [*mailops, "apply", str(many), "--yes"]
            row(
                "first apply, 1 host (builds and installs the runtime)",
                timed(apply_one, env, "applied"),
            )
            row(
                f"first apply, {args.hosts} hosts (runtime installed)",
                timed(apply_many, env, "applied"),
            )
            installed = [str(install / "current" / "bin" / "mailops")]
            user_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

            def noop(command: list[str]) -> float:
                command = [*installed, *command[3:]]
                timed(command, user_env, "in sync")  # the first finds them in sync: the memo
                return median_of(args.runs, command, user_env, "in sync")

            noop_one = row("no-op apply, 1 host", noop(apply_one))
            noop_many = row(f"no-op apply, {args.hosts} hosts", noop(apply_many))
            full_one = row("  with --full (render and plan), 1 host", noop([*apply_one, "--full"]))
            full_many = row(
                f"  with --full (render and plan), {args.hosts} hosts",
                noop([*apply_many, "--full"]),
            )
            for name, spec in (("1 host", one), (f"{args.hosts} hosts", many)):
                cpu, wall = in_process(spec, args.runs, env)
                row(f"  the same in one warm process, {name}", wall)
                row("    CPU time of mailops itself (the rest: hosts, sshd)", cpu)
            row(
                "  starting `mailops --version` (Python and imports)",
                median_of(args.runs, [*installed, "--version"], user_env),
            )
            ansible = None
            if args.no_ansible or not shutil.which("ansible-playbook"):
                print("ansible-playbook not installed: no side-by-side figure")
            else:
                ansible = run_ansible(root, servers, known, args)
            report((noop_one, noop_many), (full_one, full_many), ansible, args)


def _load() -> str:
    return (
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min) on {os.cpu_count()} CPUs"
    )


def run_ansible(root: Path, servers, known: Path, args) -> tuple[float, float]:
    playbook, inventory = ansible_setup(root, servers, known)
    env = ansible_env(root, known, len(servers))
    command = ["ansible-playbook", "-i", str(inventory), str(playbook)]
    timed(command, env, "changed=11")  # first run: 10 files and the handler
    runs = max(1, min(args.runs, 3))
    one = median_of(runs, [*command, "--limit", "h0"], env, "changed=0")
    print(f"{'ansible-playbook no-op, 1 host':<60} {one:8.2f}", flush=True)
    many = median_of(runs, command, env, "changed=0")
    print(f"{f'ansible-playbook no-op, {len(servers)} hosts':<60} {many:8.2f}", flush=True)
    return one, many


def report(noop, full, ansible, args) -> None:
    print(f"load average at the end: {_load()}")
    goals = (0.5, 2.0)
    names = ("1 host", f"{args.hosts} hosts")
    verdicts = [
        f"{name} < {goal} s: {'met' if took < goal else 'missed'}"
        for name, goal, took in zip(names, goals, noop, strict=True)
    ]
    print(f"goals, no-op: {'; '.join(verdicts)}")
    if ansible:
        print()
        print(
            f"{'no-op, same work (10 templated files + handler)':<40} {'mailops':>8} "
            f"{'--full':>8} {'ansible':>8} {'ratio':>7} {'--full':>7}"
        )
        for name, m, f, a in zip(names, noop, full, ansible, strict=True):
            print(f"{name:<40} {m:8.2f} {f:8.2f} {a:8.2f} {a / m:6.1f}x {a / f:6.1f}x")


if __name__ == "__main__":
    main()
