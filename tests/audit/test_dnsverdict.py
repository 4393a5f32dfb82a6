"""Answers judged against expected records: what counts as a conflict, and the
exact lines to publish and remove."""

from __future__ import annotations

import dns.rrset

from mailops.audit.dnsverdict import judge
from mailops.render.dns import Record

SPF = Record.txt("example.org", "v=spf1 mx -all", 3600, "spf", "example.org")
MX = Record("example.org", "MX", 3600, "10 mx1.example.org.", "mx", "example.org")
KEY_A = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
KEY_B = "v=DKIM1; k=ed25519; p=2222AYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
DKIM = Record.txt("s1._domainkey.example.org", KEY_A, 3600, "dkim", "example.org")


def rrset(name: str, rtype: str, *values: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(name + ".", 300, "IN", rtype, *values)


def test_same_records_in_other_spelling_pass():
    answer = rrset("Example.ORG", "MX", "10 MX1.example.org.")
    assert judge("mx", "MX", [MX], answer).good


def test_an_mx_the_spec_does_not_list_is_flagged_with_the_line_to_remove():
    verdict = judge(
        "mx", "MX", [MX], rrset("example.org", "MX", "10 mx1.example.org.", "5 evil.example.")
    )
    assert verdict.problems == ["has MX 5 evil.example., which the spec does not list"]
    assert verdict.fix_lines() == ["remove: example.org. IN MX 5 evil.example."]


def test_missing_mx_says_what_to_publish():
    verdict = judge("mx", "MX", [MX], None)
    assert verdict.problems == ["lacks MX 10 mx1.example.org."]
    assert verdict.fix_lines() == ["publish: example.org. 3600 IN MX 10 mx1.example.org."]


def test_other_txt_records_beside_spf_are_fine():
    answer = rrset("example.org", "TXT", '"v=spf1 mx -all"', '"google-site-verification=abc"')
    assert judge("spf", "TXT", [SPF], answer).good


def test_a_second_spf_record_breaks_spf():
    answer = rrset("example.org", "TXT", '"v=spf1 mx -all"', '"v=spf1 include:other.example ~all"')
    verdict = judge("spf", "TXT", [SPF], answer)
    assert verdict.problems == [
        'has another SPF record "v=spf1 include:other.example ~all": with two, receivers '
        "fail every SPF check (permerror, RFC 7208 §4.5)"
    ]
    assert verdict.fix_lines() == [
        'remove: example.org. IN TXT "v=spf1 include:other.example ~all"'
    ]


def test_a_different_spf_record_is_not_called_a_second_one():
    verdict = judge("spf", "TXT", [SPF], rrset("example.org", "TXT", '"v=spf1 -all"'))
    assert verdict.problems == [
        'lacks TXT "v=spf1 mx -all"',
        'has TXT "v=spf1 -all", which the spec does not list',
    ]


def test_split_txt_strings_compare_joined():
    answer = rrset("example.org", "TXT", '"v=spf1 " "mx -all"')
    assert judge("spf", "TXT", [SPF], answer).good


def test_dkim_with_other_key_fails_and_names_the_key_file():
    answer = rrset("s1._domainkey.example.org", "TXT", f'"{KEY_B}"')
    verdict = judge("dkim", "TXT", [DKIM], answer, key_file="keys/dkim/example.org.s1.key")
    assert verdict.problems == [
        "the public key in DNS is not the key in keys/dkim/example.org.s1.key: mail signed "
        "with it fails DKIM verification"
    ]
    assert verdict.fix_lines() == [
        f'publish: s1._domainkey.example.org. 3600 IN TXT "{KEY_A}"',
        f'remove: s1._domainkey.example.org. IN TXT "{KEY_B}"',
    ]


def test_dkim_same_key_written_differently_passes():
    answer = rrset(
        "s1._domainkey.example.org", "TXT", f'"k=ed25519; v=DKIM1; p={KEY_A.split("p=")[1]}"'
    )
    verdict = judge("dkim", "TXT", [DKIM], answer)
    assert verdict.good
    assert verdict.note == "the key file's key (its tags are written differently)"


def test_mta_sts_id_must_be_the_policys():
    record = Record.txt(
        "_mta-sts.example.org", "v=STSv1; id=abc123", 3600, "mta-sts", "example.org"
    )
    assert judge(
        "mta-sts", "TXT", [record], rrset("_mta-sts.example.org", "TXT", '"v=STSv1;id=abc123"')
    ).good
    verdict = judge(
        "mta-sts", "TXT", [record], rrset("_mta-sts.example.org", "TXT", '"v=STSv1; id=old1"')
    )
    assert verdict.problems == [
        "id old1 is not the id of the policy the spec makes (abc123): senders keep using the "
        "policy they cached"
    ]


def test_an_address_the_spec_does_not_have_must_be_absent():
    verdict = judge("address", "AAAA", [], rrset("mx1.example.org", "AAAA", "2001:db8::99"))
    assert verdict.problems == ["has AAAA 2001:db8::99, which the spec does not list"]
    assert judge("address", "AAAA", [], None).good
