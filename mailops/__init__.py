"""mailops: declarative self-hosted mail."""


def __getattr__(name: str) -> str:
    # The version comes from the installed metadata, read on first use:
    # importlib.metadata takes longer to import than most commands need.
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("mailops")
    except PackageNotFoundError:  # running from a source tree that is not installed
        value = "0.0.0+src"
    globals()["__version__"] = value
    return value
