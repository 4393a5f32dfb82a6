"""Commands of any state and of logging in: CAPABILITY, NOOP, LOGOUT, STARTTLS,
AUTHENTICATE PLAIN (with SASL-IR), LOGIN, ID, ENABLE, NAMESPACE, COMPRESS."""

from __future__ import annotations

import base64
import binascii
import re
import ssl
from typing import TYPE_CHECKING

from mailops.runtime.imap import pack
from mailops.runtime.imap.conn import Closed
from mailops.runtime.imap.dispatch import ANY, AUTH, ONLY_NOT_AUTHENTICATED, No, command
from mailops.runtime.imap.parse import BadCommand, Command
from mailops.runtime.log import log
from mailops.runtime.store import DELIMITER

if TYPE_CHECKING:
    from mailops.runtime.imap.session import Session

PLAINTEXT_REFUSED = "Plain-text authentication needs TLS: use STARTTLS first"
ENABLEABLE = ("CONDSTORE", "QRESYNC", "UTF8=ACCEPT")
_ID_FIELDS = 30  # RFC 2971: at most 30 field-value pairs
_BASE64_OR_EQ = re.compile(rb"[A-Za-z0-9+/]+={0,2}|=")


@command("CAPABILITY", states=ANY)
async def capability(s: Session, cmd: Command) -> str | None:
    cmd.args.end()
    s.untagged("CAPABILITY " + " ".join(s.service.capabilities(s)))
    return None


@command("NOOP", states=ANY)
async def noop(s: Session, cmd: Command) -> str | None:
    cmd.args.end()
    return None  # the session reports folder updates before the tagged OK


@command("LOGOUT", states=ANY)
async def logout(s: Session, cmd: Command) -> str | None:
    cmd.args.end()
    s.untagged("BYE mailops IMAP server logging out")
    s.logged_out = True
    return None


@command("STARTTLS", states=ONLY_NOT_AUTHENTICATED)
async def starttls(s: Session, cmd: Command) -> str | None:
    cmd.args.end()
    context = s.service.tls()
    if s.tls or context is None:
        raise BadCommand("TLS is already active" if s.tls else "TLS is not available")
    if s.conn.buffered():
        # CVE-2011-0411 / RFC 3501 §11.1: what was pipelined after STARTTLS came in
        # the clear and must not be taken as coming over TLS.
        s.closing = "Commands were pipelined after STARTTLS"
        raise BadCommand("commands were pipelined after STARTTLS")
    s._tagged(cmd.tag, "OK", "Begin TLS negotiation now")
    await s.conn.flush()
    try:
        await s.conn.start_tls(context)
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        log("imap.tls_failed", client=s.client, error=exc)
        raise Closed from None
    s.tls = True
    s.tagged_done = True
    return None


@command("LOGIN", states=ONLY_NOT_AUTHENTICATED)
async def login(s: Session, cmd: Command) -> str | None:
    user = cmd.args.text()
    cmd.args.sp()
    password = cmd.args.text()
    cmd.args.end()
    if not s.plaintext_ok():
        raise No(PLAINTEXT_REFUSED, "PRIVACYREQUIRED")
    await s.login(user, password)
    return _logged_in(s)


@command("AUTHENTICATE", states=ONLY_NOT_AUTHENTICATED)
async def authenticate(s: Session, cmd: Command) -> str | None:
    mechanism = cmd.args.atom().upper()
    initial = None
    if cmd.args.maybe_sp():  # SASL-IR (RFC 4959)
        initial = cmd.args.match(_BASE64_OR_EQ, "a base64 initial response")
    cmd.args.end()
    if mechanism != "PLAIN":
        raise No("Unsupported authentication mechanism", "CANNOT")
    if not s.plaintext_ok():
        raise No(PLAINTEXT_REFUSED, "PRIVACYREQUIRED")
    if initial is None:
        initial = await s.continuation()
        if initial == b"*":
            raise BadCommand("authentication cancelled")
    user, password = _plain(initial)
    await s.login(user, password)
    return _logged_in(s)


def _logged_in(s: Session) -> str:
    return f"[CAPABILITY {' '.join(s.service.capabilities(s))}] Logged in"


def _plain(response: bytes) -> tuple[str, str]:
    """RFC 4616: authzid NUL authcid NUL password; authzid must be empty or the user."""
    try:
        blob = b"" if response == b"=" else base64.b64decode(response, validate=True)
    except (binascii.Error, ValueError):
        raise BadCommand("invalid base64 in the PLAIN response") from None
    parts = blob.split(b"\0")
    if len(parts) != 3:
        raise BadCommand("malformed PLAIN response")
    authzid, user, password = (p.decode("utf-8", "replace") for p in parts)
    if authzid and authzid != user:
        raise No("Logging in as another user is not allowed", "AUTHORIZATIONFAILED")
    return user, password


@command("ID", states=ANY)
async def id_command(s: Session, cmd: Command) -> str | None:
    """RFC 2971: note what the client says it is; answer with our name."""
    if not cmd.args.maybe(b"NIL"):
        fields = cmd.args.parenthesized(cmd.args.nstring)
        if len(fields) % 2 or len(fields) > 2 * _ID_FIELDS:
            raise BadCommand("ID takes up to 30 field-value pairs")
        pairs = dict(zip(fields[::2], fields[1::2], strict=True))
        name = pairs.get(b"name") or b""
        log("imap.id", client=s.client, name=name[:64].decode("utf-8", "replace"))
    cmd.args.end()
    s.untagged(b"ID " + pack.encode(["name", "mailops"]))
    return None


@command("ENABLE", states=AUTH)
async def enable(s: Session, cmd: Command) -> str | None:
    """RFC 5161: turn on extensions that change how the server talks."""
    wanted = [cmd.args.atom().upper()]
    while cmd.args.maybe_sp():
        wanted.append(cmd.args.atom().upper())
    cmd.args.end()
    newly = [name for name in wanted if name in ENABLEABLE and name not in s.enabled]
    if "CONDSTORE" in newly or "QRESYNC" in newly:  # QRESYNC implies CONDSTORE (§3.2.3)
        s.enable_condstore()
    s.enabled.update(newly)
    s.untagged(" ".join(["ENABLED", *newly]))
    return None


@command("NAMESPACE", states=AUTH)
async def namespace(s: Session, cmd: Command) -> str | None:
    """RFC 2342: one personal namespace, no shared or other users' folders."""
    cmd.args.end()
    s.untagged(b'NAMESPACE (("" "%s")) NIL NIL' % DELIMITER.encode())
    return None


@command("COMPRESS", states=AUTH)
async def compress(s: Session, cmd: Command) -> str | None:
    mechanism = cmd.args.atom().upper()
    cmd.args.end()
    if mechanism != "DEFLATE":
        raise BadCommand("only COMPRESS DEFLATE is offered")
    if s.conn.compressed:
        raise No("Compression is already active", "COMPRESSIONACTIVE")
    s._tagged(cmd.tag, "OK", "DEFLATE active")
    await s.conn.flush()
    s.conn.start_compress()
    s.tagged_done = True
    return None


