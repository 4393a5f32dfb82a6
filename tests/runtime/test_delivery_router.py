"""Routing: relay, backup forward or MX by priority, and the DNS cases of RFC 5321 §5.1
and RFC 7505."""

from __future__ import annotations

import asyncio
import random

import pytest

from mailops.runtime.delivery.mtasts import Policy
from mailops.runtime.delivery.resolver import DnsError, MxRecord
from mailops.runtime.delivery.router import (
    Destination,
    RouteError,
    Router,
    Target,
    destination,
    order_mx,
)
from tests.runtime.delivery_fakes import FakeDns, config


def route(tmp_path, dns, dest, *, seed=1, policy=None):
    conf = config(tmp_path)

    async def lookup(domain):
        return policy

    router = Router(dns, lambda: conf, policy=lookup, rng=random.Random(seed))
    return asyncio.run(router.targets(dest))


def test_destination_by_recipient_domain_and_sender_relay(tmp_path):
    conf = config(tmp_path)
    assert destination("a@here.test", "b@far.test", conf) == Destination("mx", "far.test")
    assert destination("a@relayed.test", "b@far.test", conf) == Destination("relay", "smart")
    # A bounce (null sender) or a forward of an outside sender goes by MX.
    assert destination("", "b@far.test", conf) == Destination("mx", "far.test")
    assert destination("x@other.test", "b@far.test", conf) == Destination("mx", "far.test")
    assert destination("a@relayed.test", "b@Backup.Test", conf) == Destination(
        "backup", "backup.test"
    )
    assert destination("", "b@here.test", conf) == Destination("local", "here.test")


def test_mx_lowest_preference_first():
    records = [MxRecord(30, "c"), MxRecord(10, "a"), MxRecord(20, "b")]
    assert [r.host for r in order_mx(records, random.Random(0))] == ["a", "b", "c"]


def test_equal_preferences_are_shuffled_with_the_rng():
    records = [MxRecord(10, h) for h in "abcdef"] + [MxRecord(5, "first"), MxRecord(50, "last")]
    orders = {tuple(r.host for r in order_mx(records, random.Random(seed))) for seed in range(20)}
    assert len(orders) > 5  # really shuffled
    for order in orders:
        assert order[0] == "first" and order[-1] == "last"
        assert sorted(order[1:-1]) == list("abcdef")
    # The same seed gives the same order: the RNG is the only source of chance.
    again = [tuple(r.host for r in order_mx(records, random.Random(7))) for _ in range(2)]
    assert again[0] == again[1]


def test_mx_targets_in_order_with_every_address(tmp_path):
    dns = FakeDns(
        mx={"far.test": [MxRecord(20, "mx2.far.test"), MxRecord(10, "mx1.far.test")]},
        addresses={"mx1.far.test": ["192.0.2.1", "2001:db8::1"], "mx2.far.test": ["192.0.2.2"]},
    )
    targets = route(tmp_path, dns, Destination("mx", "far.test"))
    assert [(t.host, t.address, t.port, t.tls) for t in targets] == [
        ("mx1.far.test", "192.0.2.1", 25, "may"),
        ("mx1.far.test", "2001:db8::1", 25, "may"),
        ("mx2.far.test", "192.0.2.2", 25, "may"),
    ]


def test_no_mx_falls_back_to_the_domains_own_address(tmp_path):
    dns = FakeDns(mx={"far.test": None}, addresses={"far.test": ["192.0.2.9"]})
    assert route(tmp_path, dns, Destination("mx", "far.test")) == [Target("far.test", "192.0.2.9")]


def test_no_mx_and_no_address_is_permanent(tmp_path):
    dns = FakeDns(mx={"far.test": None}, addresses={"far.test": []})
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("mx", "far.test"))
    assert info.value.status == "5.1.2" and info.value.permanent


def test_null_mx_is_a_permanent_failure(tmp_path):
    dns = FakeDns(mx={"far.test": [MxRecord(0, "")]})
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("mx", "far.test"))
    assert info.value.status == "5.1.10"
    assert "null MX" in info.value.text
    assert dns.asked == ["MX far.test"]  # and nothing more is looked up


def test_nonexistent_domain_is_permanent_a_dns_failure_temporary(tmp_path):
    with pytest.raises(RouteError) as info:
        route(tmp_path, FakeDns(), Destination("mx", "gone.test"))
    assert info.value.status == "5.1.2"
    dns = FakeDns(mx={"far.test": DnsError("timed out", permanent=False)})
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("mx", "far.test"))
    assert info.value.status == "4.4.3" and not info.value.permanent


def test_mx_hosts_that_do_not_resolve_are_a_temporary_failure(tmp_path):
    dns = FakeDns(mx={"far.test": [MxRecord(10, "mx.far.test")]})
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("mx", "far.test"))
    assert not info.value.permanent


def test_only_mx_hosts_better_than_myself_are_used(tmp_path):
    records = [MxRecord(10, "mx1.far.test"), MxRecord(20, "mx.here.test"), MxRecord(30, "z")]
    dns = FakeDns(mx={"far.test": records}, addresses={"mx1.far.test": ["192.0.2.1"]})
    targets = route(tmp_path, dns, Destination("mx", "far.test"))
    assert [t.host for t in targets] == ["mx1.far.test"]
    dns = FakeDns(mx={"far.test": [MxRecord(5, "mx.here.test"), MxRecord(10, "other")]})
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("mx", "far.test"))
    assert info.value.status == "5.4.6"


def test_an_mx_address_of_our_own_listener_is_skipped(tmp_path):
    records = [MxRecord(10, "alias.far.test"), MxRecord(20, "mx2.far.test")]
    dns = FakeDns(
        mx={"far.test": records},
        addresses={"alias.far.test": ["127.0.0.2"], "mx2.far.test": ["192.0.2.2"]},
    )
    assert [t.address for t in route(tmp_path, dns, Destination("mx", "far.test"))] == ["192.0.2.2"]


def test_relay_target_has_auth_and_verified_tls(tmp_path):
    dns = FakeDns(addresses={"smtp.relay.test": ["192.0.2.7"]})
    [target] = route(tmp_path, dns, Destination("relay", "smart"))
    assert (target.host, target.address, target.port, target.tls) == (
        "smtp.relay.test", "192.0.2.7", 587, "verify"
    )  # fmt: skip
    assert target.username == "u" and target.password_file == str(tmp_path / "pw")
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("relay", "unknown"))
    assert info.value.status.startswith("4")  # a config mistake waits, it does not bounce


def test_backup_forwards_to_the_primary_mx_hosts(tmp_path):
    dns = FakeDns(addresses={"mx1.backup.test": ["192.0.2.5"]})
    [target] = route(tmp_path, dns, Destination("backup", "backup.test"))
    assert (target.host, target.address, target.tls) == ("mx1.backup.test", "192.0.2.5", "may")
    assert not any(q.startswith("MX") for q in dns.asked)  # never an MX lookup: no loop


def test_mta_sts_enforce_keeps_listed_hosts_with_verified_tls(tmp_path):
    records = [MxRecord(10, "evil.far.test"), MxRecord(20, "mx.far.test")]
    dns = FakeDns(
        mx={"far.test": records},
        addresses={"evil.far.test": ["192.0.2.66"], "mx.far.test": ["192.0.2.2"]},
    )
    policy = Policy("enforce", ("mx.far.test",), 86400)
    targets = route(tmp_path, dns, Destination("mx", "far.test"), policy=policy)
    assert [(t.host, t.tls) for t in targets] == [("mx.far.test", "verify")]
    testing = Policy("testing", ("mx.far.test",), 86400)
    targets = route(tmp_path, dns, Destination("mx", "far.test"), policy=testing)
    assert [(t.host, t.tls) for t in targets] == [("evil.far.test", "may"), ("mx.far.test", "may")]
    nobody = Policy("enforce", ("other.test",), 86400)
    with pytest.raises(RouteError) as info:
        route(tmp_path, dns, Destination("mx", "far.test"), policy=nobody)
    assert info.value.status == "4.7.5"  # waits for a fixed policy, never bounces


def test_a_failing_dns_server_is_asked_once_in_a_while_not_per_lookup(monkeypatch):
    from mailops.runtime.delivery import resolver as resolver_module
    from mailops.runtime.delivery.resolver import Dns, make_resolver

    asked = []

    async def refused(name, rdtype):
        asked.append((name, rdtype))
        raise DnsError(f"{name} {rdtype}: DNS lookup failed (no server answered)", permanent=False)

    dns = Dns(make_resolver(["127.0.0.1:1"]))
    monkeypatch.setattr(dns, "_ask", refused)

    async def scenario():
        for _ in range(5):
            with pytest.raises(DnsError) as caught:
                await dns.txt("down.test")
            assert not caught.value.permanent
        monkeypatch.setattr(resolver_module, "FAILURE_SECONDS", 0.0)
        with pytest.raises(DnsError):
            await dns.mx("down.test")  # another type: asked
        dns.forget_failures()
        with pytest.raises(DnsError):
            await dns.txt("down.test")  # forgotten (a reload): asked again

    asyncio.run(scenario())
    assert asked == [("down.test", "TXT"), ("down.test", "MX"), ("down.test", "TXT")]


def test_the_same_question_asked_at_once_is_sent_once(monkeypatch):
    from mailops.runtime.delivery.resolver import Dns, make_resolver

    asked = []

    async def slow(name, rdtype):
        asked.append((name, rdtype))
        await asyncio.sleep(0.05)
        return None  # "no records of this type"

    dns = Dns(make_resolver(["127.0.0.1:1"]))
    monkeypatch.setattr(dns, "_ask", slow)

    async def scenario():
        return await asyncio.gather(*(dns.txt("busy.test") for _ in range(20)), dns.mx("busy.test"))

    assert asyncio.run(scenario()) == [None] * 21
    assert asked == [("busy.test", "TXT"), ("busy.test", "MX")]
