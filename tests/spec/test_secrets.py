import pytest

from mailops.errors import SecretError
from mailops.spec.secrets import SecretRef


def test_env_reference_resolves(monkeypatch, tmp_path):
    monkeypatch.setenv("MAILOPS_TEST_SECRET", "v@lue")
    assert SecretRef(env="MAILOPS_TEST_SECRET").resolve(tmp_path) == "v@lue"


def test_missing_env_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("MAILOPS_TEST_NOPE", raising=False)
    with pytest.raises(SecretError) as info:
        SecretRef(env="MAILOPS_TEST_NOPE").resolve(tmp_path)
    assert str(info.value) == "secret environment variable MAILOPS_TEST_NOPE is not set"


def test_file_reference_is_relative_to_the_spec_and_drops_one_newline(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "bob").write_text("pa ss\n\n")
    assert SecretRef(file="secrets/bob").resolve(tmp_path) == "pa ss\n"


def test_unreadable_file_error_never_holds_the_value(tmp_path):
    with pytest.raises(SecretError) as info:
        SecretRef(file="missing.txt").resolve(tmp_path)
    assert str(info.value) == (
        f"secret file {tmp_path / 'missing.txt'} cannot be read: No such file or directory"
    )


@pytest.mark.parametrize("fields", [{}, {"env": "A", "file": "b"}])
def test_exactly_one_source(fields):
    with pytest.raises(ValueError, match="needs exactly one of 'env' or 'file'"):
        SecretRef(**fields)


def test_repr_of_a_reference_holds_no_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("MAILOPS_TEST_SECRET", "hunter2")
    ref = SecretRef(env="MAILOPS_TEST_SECRET")
    ref.resolve(tmp_path)
    assert "hunter2" not in repr(ref) + str(ref) + ref.model_dump_json()
