"""The one-line program that starts the agent on a host: `python3 -c BOOT`.

It checks the Python version first (in syntax every Python 3 reads, so an old
one answers with its version instead of a SyntaxError), then reads the agent's
modules from stdin (one frame: a JSON map of module name → source) and serves
them to `import` under the package name `mailops_agent`.
"""

from __future__ import annotations

import json
from pathlib import Path

PACKAGE = "mailops_agent"
TOO_OLD_EXIT = 3
TOO_OLD_MARK = "mailops-agent: python "

BOOT = (
    "import sys\n"
    "if sys.version_info < (3, 11):\n"
    f"    sys.stdout.write('{TOO_OLD_MARK}%d.%d.%d\\n' % sys.version_info[:3])\n"
    f"    sys.exit({TOO_OLD_EXIT})\n"
    "import importlib.abc, importlib.util, json\n"
    "n = int(sys.stdin.buffer.readline())\n"
    "src = json.loads(sys.stdin.buffer.read(n))\n"
    "class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name in src:\n"
    f"            package = name == '{PACKAGE}'\n"
    "            return importlib.util.spec_from_loader(name, self, is_package=package)\n"
    "    def create_module(self, spec):\n"
    "        return None\n"
    "    def exec_module(self, module):\n"
    "        exec(compile(src[module.__name__], module.__name__, 'exec'), module.__dict__)\n"
    "sys.meta_path.insert(0, Finder())\n"
    f"import {PACKAGE}.main\n"
    f"{PACKAGE}.main.main()\n"
)


def agent_sources() -> bytes:
    """The preamble the agent reads before anything else: length line + JSON sources."""
    folder = Path(__file__).parent
    sources = {PACKAGE: (folder / "__init__.py").read_text()}
    for path in sorted(folder.glob("*.py")):
        if path.stem not in ("__init__", "boot"):
            sources[f"{PACKAGE}.{path.stem}"] = path.read_text()
    data = json.dumps(sources).encode()
    return str(len(data)).encode() + b"\n" + data
