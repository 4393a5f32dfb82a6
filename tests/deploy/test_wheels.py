"""The runtime's wheels, made here from what is installed."""

import zipfile

from mailops.deploy import wheels


def test_mailops_wheel_is_deterministic_and_names_its_build(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = wheels._mailops_wheel(tmp_path / "a")
    second = wheels._mailops_wheel(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    assert first.name == f"mailops-{wheels.build_version()}-py3-none-any.whl"
    with zipfile.ZipFile(first) as archive:
        names = archive.namelist()
        info = f"mailops-{wheels.build_version()}.dist-info"
        assert "mailops/runtime/server.py" in names and "mailops/deploy/agent/boot.py" in names
        assert not any("__pycache__" in n for n in names)
        assert "mailops = mailops.entry:main" in archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
        assert (
            f"Version: {wheels.build_version()}" in metadata
            and "Requires-Dist: pydantic" in metadata
        )
        assert names[-1] == f"{info}/RECORD"


def test_dependencies_are_the_installed_closure():
    names = {d.metadata["Name"].lower() for d in wheels._dependencies("mailops")}
    assert {"pydantic", "pydantic_core", "cryptography", "aiosmtpd", "typer"} <= {
        n.replace("-", "_") for n in names
    } | names
    assert "pytest" not in names  # an extra ([test]) is not asked for


def test_tags_and_platform_match():
    assert wheels._wheel_tags("Tag: py2-none-any\nTag: py3-none-any\n") == "py2.py3-none-any"
    here = wheels.platform_tag()
    system = {
        "implementation": here["implementation"],
        "python": here["python"] + ".9",
        "machine": here["machine"],
    }
    assert wheels.mismatch(system) is None
    other = wheels.mismatch(dict(system, python="3.12.1", machine="aarch64"))
    assert "3.12 on aarch64" in other
