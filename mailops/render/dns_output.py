"""The formats `mailops dns` writes: BIND zone files, records to paste at a
DNS provider, and JSON for scripts; plus the zone serial.

Rendering is pure and deterministic: a `DnsSet` (from dns.build_dns), the zone
files already written (for their serials) and "today" go in, text comes out.
Only `read_previous` and `write_files` at the bottom touch the disk.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dns.exception
import dns.name
import dns.rdatatype
import dns.reversename
import dns.zone

from mailops.errors import MailopsError, UsageError
from mailops.files import write_atomic
from mailops.render.dns import (
    CanonicalRecord,
    DnsSet,
    DomainFiles,
    Notice,
    Record,
    SoaFields,
    ZoneRecords,
    canonical_name,
    canonical_value,
    quote_txt,
)
from mailops.spec import names

Format = Literal["zone", "records", "json"]

HEADER = "; {zone}: written by mailops from the spec; change the spec, not this file."


# ---------------------------------------------------------------- serial


def next_serial(old: int | None, today: dt.date) -> int:
    """`YYYYMMDDnn`: today's first serial, or one more than `old` when that is
    not greater (a second change on the same day, or a clock behind the zone)."""
    first = int(today.strftime("%Y%m%d")) * 100
    if old is not None and first <= old:
        return old + 1
    return first


def soa_record(zone: ZoneRecords, serial: int) -> Record:
    soa = zone.soa
    if soa is None:
        raise ValueError(f"zone {zone.name} is not managed: full, so it has no SOA")
    value = (
        f"{soa.mname}. {soa.rname}. {serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}"
    )
    return Record(zone.name, "SOA", zone.ttl, value, "soa")


Fingerprint = frozenset[tuple[CanonicalRecord, int]]


def fingerprint(zone: ZoneRecords) -> Fingerprint:
    """Everything a zone file says except the serial, in canonical form."""
    records = [*zone.records, soa_record(zone, 0)]
    return frozenset((r.canonical(), r.ttl) for r in records)


def parse_zone_file(text: str, zone: str) -> tuple[int, Fingerprint] | None:
    """The serial and fingerprint of a zone file already written; None when it
    does not parse (then the zone counts as changed)."""
    try:
        parsed = dns.zone.from_text(text, origin=zone + ".", relativize=False)
    except (dns.exception.DNSException, ValueError):
        return None
    serial = 0
    items = set()
    for name, rdataset in parsed.iterate_rdatasets():
        rtype = dns.rdatatype.to_text(rdataset.rdtype)
        for rdata in rdataset:
            if rdataset.rdtype == dns.rdatatype.SOA:
                serial = rdata.serial  # type: ignore[attr-defined]
                rdata = rdata.replace(serial=0)
            canon = CanonicalRecord(canonical_name(name), rtype, canonical_value(rdata))
            items.add((canon, rdataset.ttl))
    return serial, frozenset(items)


def zone_serial(zone: ZoneRecords, previous: str | None, today: dt.date) -> int:
    """Keep the serial of the zone file already written when its records are the
    same; otherwise move on. Secondaries transfer a zone only when its serial grows,
    and a serial that moved without a change makes every secondary transfer for nothing."""
    old = parse_zone_file(previous, zone.name) if previous is not None else None
    if old is None:
        return next_serial(None, today)
    old_serial, old_fingerprint = old
    if old_fingerprint == fingerprint(zone):
        return old_serial
    return next_serial(old_serial, today)


# ---------------------------------------------------------------- zone file


def zone_text(zone: ZoneRecords, serial: int) -> str:
    """A complete BIND zone file for a full zone."""
    soa = zone.soa
    if soa is None:
        raise ValueError(f"zone {zone.name} is not managed: full")
    width = _name_width(zone.name, zone.records)
    lines = [
        HEADER.format(zone=zone.name),
        f"$ORIGIN {zone.name}.",
        f"$TTL {zone.ttl}",
        *_soa_lines(soa, serial, width),
    ]
    for record in zone.records:
        lines += _zone_lines(zone, record, width)
    return "\n".join(lines) + "\n"


def _soa_lines(soa: SoaFields, serial: int, width: int) -> list[str]:
    pad = " " * (width + 11)
    return [
        f"{'@':<{width}}        IN SOA    {soa.mname}. {soa.rname}. (",
        f"{pad}{serial:<12} ; serial",
        f"{pad}{soa.refresh:<12} ; refresh",
        f"{pad}{soa.retry:<12} ; retry",
        f"{pad}{soa.expire:<12} ; expire",
        f"{pad}{soa.minimum:<10} ) ; negative-caching TTL",
    ]


def _zone_lines(zone: ZoneRecords, record: Record, width: int) -> list[str]:
    ttl = "" if record.ttl == zone.ttl else str(record.ttl)
    head = f"{record.relative_name(zone.name):<{width}} {ttl:<6} IN {record.type:<6} "
    if record.type != "TXT":
        return [head + record.value]
    strings = [quote_txt([s]) for s in record.strings]
    if len(strings) == 1:
        return [head + strings[0]]
    # One string per line inside parentheses: long DKIM keys stay readable.
    indent = " " * (len(head) + 2)
    lines = [f"{head}( {strings[0]}"]
    lines += [indent + s for s in strings[1:-1]]
    lines.append(f"{indent}{strings[-1]} )")
    return lines


def _name_width(zone: str, records: Iterable[Record]) -> int:
    longest = max((len(r.relative_name(zone)) for r in records), default=1)
    return min(max(longest, 1), 40)


# ---------------------------------------------------------------- records to paste


def records_text(
    zone: ZoneRecords, reverse: Sequence[Record] = (), files: Sequence[DomainFiles] = ()
) -> str:
    """The zone's mail records as lines to enter in a provider's form."""
    records = zone.mail_records()
    width = _name_width(zone.name, records)
    lines = [f"# {zone.name}: DNS records for mail, to enter at the DNS provider of {zone.name}"]
    if zone.managed == "full":
        lines.append(f"# (mailops also writes the whole zone: {zone.name}.zone)")
    lines += [
        f"# Columns: name (relative to {zone.name}; @ is {zone.name} itself), type, TTL, value.",
        "# TXT: the text, then the same as quoted strings of at most 255 bytes for providers",
        "# that want them split.",
        "",
    ]
    for record in records:
        head = f"{record.relative_name(zone.name):<{width}}  {record.type:<6} {record.ttl:<7} "
        if record.type == "TXT":
            lines.append(head + record.text)
            lines.append(" " * len(head) + "split: " + quote_txt(record.strings))
        else:
            lines.append(head + record.value)
    if reverse:
        lines += ["", *reverse_lines(reverse)]
    if files:
        lines += ["", *web_file_lines(files)]
    return "\n".join(lines) + "\n"


def reverse_lines(reverse: Sequence[Record]) -> list[str]:
    lines = [
        "# Reverse DNS: PTR records live with whoever owns the address (usually the hosting",
        "# provider's panel or support). Ask for each of these:",
    ]
    for record in reverse:
        address = dns.reversename.to_address(dns.name.from_text(record.fqdn))
        lines.append(f"{address}  →  {record.value[:-1]}   ({record.fqdn} PTR {record.value})")
    return lines


def web_file_lines(files: Sequence[DomainFiles]) -> list[str]:
    lines = ["# Files to serve over the web (written with --out as <domain>/<file>):"]
    for f in files:
        if f.mta_sts is not None:
            lines.append(
                f"#   {f.domain}/mta-sts.txt at https://mta-sts.{f.domain}/.well-known/mta-sts.txt"
            )
        lines.append(
            f"#   {f.domain}/config-v1.1.xml at http://autoconfig.{f.domain}/mail/config-v1.1.xml"
        )
    return lines


# ---------------------------------------------------------------- JSON


def json_text(dnsset: DnsSet, zones: Sequence[ZoneRecords], serials: Mapping[str, int]) -> str:
    """The record model for scripts: zones with their records, PTRs, files, notes."""
    data = {
        "zones": [_zone_json(z, serials.get(z.name)) for z in zones],
        "reverse": [
            {
                "address": dns.reversename.to_address(dns.name.from_text(r.fqdn)),
                "name": r.name,
                "ptr": r.value,
            }
            for r in _reverse_of(dnsset, zones)
        ],
        "files": [
            {"domain": f.domain, "mta_sts": f.mta_sts, "autoconfig": f.autoconfig}
            for f in _files_of(dnsset, zones)
        ],
        "notes": [{"severity": n.severity, "message": n.message} for n in dnsset.notes],
    }
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _zone_json(zone: ZoneRecords, serial: int | None) -> dict:
    soa = None
    if zone.soa is not None:
        soa = {"serial": serial, **dataclasses.asdict(zone.soa)}
    return {
        "zone": zone.name,
        "managed": zone.managed,
        "declared": zone.declared,
        "ttl": zone.ttl,
        "domains": list(zone.domains),
        "nameservers": list(zone.nameservers),
        "soa": soa,
        "records": [_record_json(r) for r in zone.records],
    }


def _record_json(record: Record) -> dict:
    data = {
        "name": record.name,
        "type": record.type,
        "ttl": record.ttl,
        "value": record.value,
        "purpose": record.purpose,
        "domain": record.domain or None,
    }
    if record.type == "TXT":
        data["text"] = record.text
    return data


# ---------------------------------------------------------------- what to print or write


@dataclass(frozen=True)
class DnsOutput:
    stdout: str
    """What to print when there is no --out."""
    files: dict[str, bytes]
    """Relative path → content, for --out."""
    notes: tuple[Notice, ...]
    """Everything the operator should read on stderr (the DnsSet's notes included)."""


def select_zones(kinds: Mapping[str, str], zone: str | None, fmt: Format | None) -> list[str]:
    """The names of the zones to output — one (--zone) or all — given each zone's
    kind (dns.zone_kinds); refuse a zone file for a zone that cannot have one.
    Needs no keys, so a mistyped option fails before any key is made."""
    selected = sorted(kinds)
    if zone is not None:
        try:
            wanted = names.domain(zone, "zone")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if wanted not in kinds:
            known = ", ".join(sorted(kinds)) or "none"
            raise UsageError(f"no zone {wanted} in the spec (zones: {known})")
        selected = [wanted]
    if fmt == "zone":
        lacking = [name for name in selected if kinds[name] != "full"]
        if lacking:
            raise UsageError(
                f"no zone file for {', '.join(lacking)}: only zones with managed: full have one "
                "(use --format records, or --zone to pick a full zone)"
            )
    return selected


def serials_for(
    zones: Iterable[ZoneRecords], previous: Mapping[str, str], today: dt.date
) -> dict[str, int]:
    return {z.name: zone_serial(z, previous.get(z.name), today) for z in zones if z.soa}


def render_output(
    dnsset: DnsSet,
    zones: Sequence[ZoneRecords],
    fmt: Format | None,
    serials: Mapping[str, int],
) -> DnsOutput:
    """Stdout text and --out files for the selected zones. Default format: a zone
    file for full zones and records for the rest; as files, records for every zone
    too, since even a full zone's operator may need to enter them somewhere."""
    files = web_files(dnsset, zones)
    if fmt == "json":
        text = json_text(dnsset, zones, serials)
        return DnsOutput(text, {"dns.json": text.encode(), **files}, dnsset.notes)
    notes = list(dnsset.notes)
    chunks = []
    for zone in zones:
        reverse = dnsset.reverse_for(zone)
        records = records_text(zone, reverse, dnsset.files_for(zone))
        if zone.soa is not None and fmt != "records":
            text = zone_text(zone, serials[zone.name])
            chunks.append(text)
            files[f"{zone.name}.zone"] = text.encode()
            # A zone file has no place for what others must publish: say it on stderr.
            notes += [_reverse_note(r) for r in reverse]
        else:
            chunks.append(records)
        if fmt != "zone":
            files[f"{zone.name}.records.txt"] = records.encode()
    return DnsOutput("\n".join(chunks), files, tuple(notes))


def web_files(dnsset: DnsSet, zones: Sequence[ZoneRecords]) -> dict[str, bytes]:
    """The MTA-STS policy and autoconfig XML of each domain in `zones`."""
    files = {}
    for f in _files_of(dnsset, zones):
        if f.mta_sts is not None:
            files[f"{f.domain}/mta-sts.txt"] = f.mta_sts.encode()
        files[f"{f.domain}/config-v1.1.xml"] = f.autoconfig.encode()
    return files


def _reverse_note(record: Record) -> Notice:
    address = dns.reversename.to_address(dns.name.from_text(record.fqdn))
    return Notice(
        "note",
        f"reverse DNS: ask the owner of {address} to set {record.fqdn} PTR {record.value}",
    )


def _reverse_of(dnsset: DnsSet, zones: Sequence[ZoneRecords]) -> tuple[Record, ...]:
    if len(zones) == len(dnsset.zones):
        return dnsset.reverse
    return tuple(r for z in zones for r in dnsset.reverse_for(z))


def _files_of(dnsset: DnsSet, zones: Sequence[ZoneRecords]) -> tuple[DomainFiles, ...]:
    return tuple(f for z in zones for f in dnsset.files_for(z))


# ---------------------------------------------------------------- I/O


def read_previous(out_dir: Path, zones: Iterable[ZoneRecords]) -> dict[str, str]:
    """The zone files an earlier run wrote to `out_dir`, by zone name."""
    previous = {}
    for zone in zones:
        path = out_dir / f"{zone.name}.zone"
        try:
            previous[zone.name] = path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            continue  # nothing written yet (a bad --out is reported when writing)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise MailopsError(f"cannot read the earlier zone file {path}: {reason}") from None
    return previous


def write_files(out_dir: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write every file under `out_dir`, each atomically. Everything was rendered
    before this is called, so a failure cannot leave a half-rendered set behind;
    an --out that is no writable folder fails before the first file."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise MailopsError(f"--out {out_dir} exists and is not a folder") from None
    except OSError as exc:
        raise MailopsError(f"cannot create the --out folder {out_dir}: {exc.strerror}") from None
    if not out_dir.is_dir():
        raise MailopsError(f"--out {out_dir} exists and is not a folder")
    try:  # find out now, not after the first files were replaced
        fd, probe = tempfile.mkstemp(prefix=".mailops-probe.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise MailopsError(f"cannot write to the --out folder {out_dir}: {exc.strerror}") from None
    written = []
    for relative in sorted(files):
        path = out_dir / relative
        write_atomic(path, files[relative])
        written.append(path)
    return written
