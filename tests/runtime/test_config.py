import pytest

from mailops.runtime.config import ConfigError, load_config

GOOD = """
hostname = "mx1.example.org"
data_dir = "data"
passwd_file = "passwd"
aliases_file = "aliases"

[tls]
cert = "tls/cert.pem"
key = "/abs/key.pem"

[[listeners]]
service = "submissions"
address = "127.0.0.1"
port = 2465

[domains."Example.ORG"]
role = "mailbox"
"""


def test_relative_paths_are_beside_the_file(tmp_path):
    path = tmp_path / "runtime.toml"
    path.write_text(GOOD)
    config = load_config(path)
    assert config.data_dir == tmp_path / "data"
    assert config.passwd_file == tmp_path / "passwd"
    assert config.tls.cert == tmp_path / "tls" / "cert.pem"
    assert str(config.tls.key) == "/abs/key.pem"
    assert list(config.domains) == ["example.org"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("port = 2465", "port = 0"), "listeners.0.port: Input should be greater"),
        (GOOD.replace('role = "mailbox"', 'role = "primary"'), "domains.Example.ORG.role:"),
        (GOOD + "\nbogus = 1\n", "bogus: Extra inputs are not permitted"),
        (GOOD.replace("[tls]", "[tls_]"), "tls_"),
        ("hostname = ", "not valid TOML"),
    ],
)
def test_errors_name_the_key(tmp_path, text, expected):
    path = tmp_path / "runtime.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_implicit_tls_listener_needs_tls(tmp_path):
    path = tmp_path / "runtime.toml"
    path.write_text(GOOD.replace('[tls]\ncert = "tls/cert.pem"\nkey = "/abs/key.pem"\n', ""))
    with pytest.raises(ConfigError, match="listeners submissions need \\[tls\\]"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read: No such file"):
        load_config(tmp_path / "nope.toml")
