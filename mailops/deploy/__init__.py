"""plan and apply: make hosts match the spec, over SSH or on this machine.

targets    spec → the selected hosts, rendered, and how to reach each
layout     where a host's files live; desired: the files with mode and owner
connection SSH (paramiko) and Local; hostkeys: known_hosts, fingerprints;
           sshlib: paramiko on first use, and the TCP socket it runs on
session    the agent on the host (agent/, sent as source each session)
facts      one round trip: file hashes, runtime build, service, what it loaded
plan       bundle × facts → changes, install, handler; redact: secret-free diffs;
           handlers: reload or restart
wheels     the runtime's wheels, made here from what is installed
executor   one host through plan and apply; apply: all hosts in parallel
display    live progress, plans, summary; service, trust, welcome: the other commands
"""
