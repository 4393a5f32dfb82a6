from mailops.audit.dmarccheck import problems


def test_the_record_mailops_writes_is_valid():
    assert problems("v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org; pct=50") == []


def test_each_broken_tag_is_named():
    text = "v=DMARC1; p=block; sp=none; adkim=x; pct=150; rua=postmaster@example.org"
    assert problems(text) == [
        "p=block is not one of none, quarantine, reject",
        "adkim=x is not r or s",
        "pct=150 is not a number from 0 to 100",
        "rua entry 'postmaster@example.org' is not a mailto: or https: URI",
    ]


def test_version_first_and_policy_required():
    assert problems("p=reject; v=DMARC1") == ["does not start with v=DMARC1"]
    assert problems("v=DMARC1; rua=mailto:a@example.org") == [
        "has no p= (policy) tag, so receivers ignore it"
    ]
