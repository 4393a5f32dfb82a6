"""The one-line program that starts the agent on a host: `python3 -c BOOT`.

It checks the Python version first (in syntax every Python 3 reads, so an old
one answers with its version instead of a SyntaxError), then reads the agent's
modules from stdin and serves them to `import` under the package name
`mailops_agent`.

The modules come twice: as source (a JSON map of module name → source) and
as code objects compiled here (marshal). A host whose Python reads this
Python's bytecode (the same magic number) runs the code as it is and skips
compiling the sources, a fifth of the agent's start-up; any other runs the
sources. The preamble is one header line (JSON: the magic number and the two
parts' sizes) followed by the two parts, each zlib-compressed (a third of the
bytes, for hosts at the end of a slow link).
"""

from __future__ import annotations

import functools
import json
import marshal
import threading
import zlib
from importlib.machinery import SourceFileLoader
from importlib.util import MAGIC_NUMBER
from pathlib import Path

PACKAGE = "mailops_agent"
TOO_OLD_EXIT = 3
TOO_OLD_MARK = "mailops-agent: python "

BOOT = (
    "import sys\n"
    "if sys.version_info < (3, 11):\n"
    f"    sys.stdout.write('{TOO_OLD_MARK}%d.%d.%d\\n' % sys.version_info[:3])\n"
    f"    sys.exit({TOO_OLD_EXIT})\n"
    # importlib.machinery only: importlib.abc and importlib.util would import
    # much of the standard library, a third of the agent's start-up time.
    "import json, marshal, zlib\n"
    "from importlib.machinery import ModuleSpec\n"
    "head = json.loads(sys.stdin.buffer.readline())\n"
    "src = json.loads(zlib.decompress(sys.stdin.buffer.read(head['sources'])))\n"
    "code = sys.stdin.buffer.read(head['code'])\n"
    "magic = getattr(sys.modules.get('_frozen_importlib_external'), 'MAGIC_NUMBER', b'')\n"
    "code = marshal.loads(zlib.decompress(code)) if magic.hex() == head['magic'] else {}\n"
    "class Finder:\n"
    "    def find_spec(self, name, path, target=None):\n"
    "        if name in src:\n"
    f"            return ModuleSpec(name, self, is_package=name == '{PACKAGE}')\n"
    "    def create_module(self, spec):\n"
    "        return None\n"
    "    def exec_module(self, module):\n"
    "        name = module.__name__\n"
    "        exec(code.get(name) or compile(src[name], name, 'exec'), module.__dict__)\n"
    "sys.meta_path.insert(0, Finder())\n"
    f"import {PACKAGE}.main\n"
    f"{PACKAGE}.main.main()\n"
)


def _module_files() -> dict[str, Path]:
    folder = Path(__file__).parent
    files = {PACKAGE: folder / "__init__.py"}
    for path in sorted(folder.glob("*.py")):
        if path.stem not in ("__init__", "boot"):
            files[f"{PACKAGE}.{path.stem}"] = path
    return files


_lock = threading.Lock()


def agent_sources() -> bytes:
    """The preamble the agent reads before anything else (see the module's doc).
    Made once per process; sessions that ask meanwhile wait for it."""
    with _lock:
        return _preamble()


@functools.cache
def _preamble() -> bytes:
    files = _module_files()
    sources = json.dumps({name: path.read_text() for name, path in files.items()}).encode()
    # The loader compiles as `import` does, from the bytecode cache when it is current.
    code = marshal.dumps(
        {name: SourceFileLoader(name, str(path)).get_code(name) for name, path in files.items()}
    )
    # level 1: nearly all the saving for half the time, which every command pays
    sources, code = zlib.compress(sources, 1), zlib.compress(code, 1)
    head = {"magic": MAGIC_NUMBER.hex(), "sources": len(sources), "code": len(code)}
    return json.dumps(head).encode() + b"\n" + sources + code
