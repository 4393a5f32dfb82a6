"""One DNS answer judged against the records the spec expects at that name and type.

The comparison is render/dns.py's canonical one (names lowercased, TXT strings
joined, addresses normalised), so a record `mailops dns` wrote always passes.
On top of it, each purpose knows which differences matter:

- TXT names are shared: another TXT beside the SPF record (a site verification
  token) is none of mail's business, but a second `v=spf1` record breaks SPF.
  So only TXT records with the same tag as an expected one count as conflicts;
  at a DKIM selector's name every TXT does.
- A DKIM record passes when it publishes the key file's public key, however its
  tags are written; MTA-STS when its id is the policy's id.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.rrset

from mailops.render.dns import CanonicalRecord, Record, canonical_rrset, txt_value

TXT_TAGS = ("v=spf1", "v=DMARC1", "v=STSv1", "v=TLSRPTv1", "v=DKIM1")


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    publish: list[str] = field(default_factory=list)
    """Zone-file lines that should be there."""
    remove: list[str] = field(default_factory=list)
    """Lines that should not."""
    note: str = ""

    @property
    def good(self) -> bool:
        return not self.problems

    def fix_lines(self) -> list[str]:
        return [f"publish: {line}" for line in self.publish] + [
            f"remove: {line}" for line in self.remove
        ]


def zone_line(record: Record) -> str:
    """The expected record as a zone-file line with an absolute name."""
    return f"{record.fqdn} {record.ttl} IN {record.type} {record.value}"


def found_line(record: CanonicalRecord) -> str:
    return f"{record.name} IN {record.type} {shown(record)}"


def shown(record: CanonicalRecord) -> str:
    """A value as a zone file writes it (TXT quoted)."""
    return txt_value(record.value) if record.type == "TXT" else record.value


def txt_tag(text: str) -> str:
    return text.split(";")[0].strip().split(" ")[0]


def tags(text: str) -> dict[str, str]:
    """`v=DKIM1; k=rsa; p=…` → {"v": "DKIM1", "k": "rsa", "p": "…"}; whitespace
    inside values (long keys folded by a provider) is dropped."""
    out = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = "".join(value.split())
    return out


def judge(
    purpose: str,
    rtype: str,
    expected: Sequence[Record],
    rrset: dns.rrset.RRset | None,
    key_file: str = "",
) -> Verdict:
    have = canonical_rrset(rrset) if rrset is not None else frozenset()
    if purpose == "dkim":
        return _judge_dkim(expected, have, key_file)
    if purpose == "mta-sts":
        return _judge_mta_sts(expected, have)
    return _judge_plain(purpose, rtype, expected, have)


def _judge_plain(
    purpose: str, rtype: str, expected: Sequence[Record], have: frozenset[CanonicalRecord]
) -> Verdict:
    want = {r.canonical(): r for r in expected}
    verdict = Verdict()
    for canon, record in sorted(want.items()):
        if canon not in have:
            verdict.problems.append(f"lacks {rtype} {shown(canon)}")
            verdict.publish.append(zone_line(record))
    for extra in sorted(have - want.keys()):
        if not _conflicts(purpose, extra, want):
            continue
        if txt_tag(extra.value) == "v=spf1" and have & want.keys():
            verdict.problems.append(
                f"has another SPF record {shown(extra)}: with two, receivers fail every "
                "SPF check (permerror, RFC 7208 §4.5)"
            )
        else:
            verdict.problems.append(f"has {rtype} {shown(extra)}, which the spec does not list")
        verdict.remove.append(found_line(extra))
    return verdict


def _conflicts(purpose: str, extra: CanonicalRecord, want: dict) -> bool:
    """Does a record the spec does not list get in the way? Other TXT records at a
    shared name do not, unless they carry the same tag as an expected one."""
    if extra.type != "TXT":
        return True
    wanted_tags = {txt_tag(c.value) for c in want}
    return txt_tag(extra.value) in wanted_tags


def _judge_dkim(
    expected: Sequence[Record], have: frozenset[CanonicalRecord], key_file: str
) -> Verdict:
    (record,) = expected
    want = tags(record.text)
    verdict = Verdict()
    published = [c for c in have if c.type == "TXT"]
    matching = [c for c in published if _same_key(tags(c.value), want)]
    if matching:
        if record.canonical() not in have:
            verdict.note = "the key file's key (its tags are written differently)"
        others = [c for c in published if c not in matching]
        for other in sorted(others):
            verdict.problems.append(f"has a second key record {shown(other)}")
            verdict.remove.append(found_line(other))
        return verdict
    verdict.publish.append(zone_line(record))
    if not published:
        verdict.problems.append("no DKIM key record: receivers cannot verify signed mail")
        return verdict
    source = f" in {key_file}" if key_file else ""
    verdict.problems.append(
        f"the public key in DNS is not the key{source}: mail signed with it fails DKIM verification"
    )
    verdict.remove += [found_line(c) for c in sorted(published)]
    return verdict


def _same_key(found: dict[str, str], want: dict[str, str]) -> bool:
    return found.get("p") == want.get("p") and found.get("k", "rsa") == want.get("k", "rsa")


def _judge_mta_sts(expected: Sequence[Record], have: frozenset[CanonicalRecord]) -> Verdict:
    (record,) = expected
    want_id = tags(record.text).get("id")
    published = sorted(c for c in have if txt_tag(c.value) == "v=STSv1")
    verdict = Verdict()
    if len(published) == 1 and tags(published[0].value).get("id") == want_id:
        return verdict
    verdict.publish.append(zone_line(record))
    verdict.remove += [found_line(c) for c in published]
    if not published:
        verdict.problems.append("no MTA-STS record: senders will not look for the policy")
    elif len(published) > 1:
        verdict.problems.append(
            f"{len(published)} MTA-STS records: senders ignore them all (RFC 8461 §3.1)"
        )
    else:
        found = tags(published[0].value).get("id", "(none)")
        verdict.problems.append(
            f"id {found} is not the id of the policy the spec makes ({want_id}): senders "
            "keep using the policy they cached"
        )
    return verdict


def summary(rtype: str, rrset: dns.rrset.RRset | None, limit: int = 3) -> str:
    """A short view of an answer, for ok findings and propagation warnings."""
    if rrset is None:
        return "nothing"
    values = sorted(shown(c) for c in canonical_rrset(rrset))
    short = [v if len(v) <= 60 else v[:57] + "…" for v in values[:limit]]
    more = f" (+{len(values) - limit} more)" if len(values) > limit else ""
    return f"{rtype} " + ", ".join(short) + more
