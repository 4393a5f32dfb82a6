"""`mailops audit`: a live mail service checked against its spec.

Check ids (stable: scripts and CI match on them):

- DNS (dnscheck, dnsservers, spfcheck, dmarccheck, fcrdns, mtasts): dns.resolver,
  dns.servers, dns.<purpose> for every expected record (dns.mx, dns.spf, dns.dkim,
  dns.dmarc, dns.mta-sts, dns.tls-rpt, dns.srv, dns.autoconfig, dns.address, dns.ns,
  dns.extra, dns.dmarc-report), spf.syntax, spf.lookups, dmarc.syntax, dns.fcrdns,
  mta-sts.policy, dkim.keyfile.
- Probes (probes/, relay): net.port, smtp.banner, smtp.ehlo, tls.handshake, tls.cert,
  auth.before-tls, smtp.auth-required, smtp.relay, smtp.unknown-recipient,
  imap.greeting, pop3.greeting.
- End to end (e2e, with --e2e): e2e.credentials, e2e.submit, e2e.imap, e2e.pop3,
  e2e.dkim, e2e.cleanup.
- Drift (drift, hoststats): drift.connect, drift.file, drift.runtime, drift.service,
  drift.reload, drift.queue, drift.disk.
- audit.error: a bug of ours, reported as a finding instead of a traceback.
"""
