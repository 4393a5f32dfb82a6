"""The agent: the part of mailops that runs on a host during plan and apply.

It is sent as source over the connection at the start of each session (SSH
exec or a local subprocess) and runs with the host's own python3 (≥ 3.11),
so it uses the standard library only and never imports the rest of mailops.
Modules refer to each other with relative imports, which work both here (as
`mailops.deploy.agent`) and on the host (as `mailops_agent`, see boot.py).

One session = one process: it holds the host's apply lock for as long as it
runs, answers requests (facts, install, transaction, service) and streams
progress events. A transaction runs to its end on the host even when the
connection drops, so a host is always left on its old or its new files.
"""
