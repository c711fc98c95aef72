# -*- test-case-name: tests.test_config -*-
"""
The jmapd configuration: a YAML file, environment variables and ``--set``
overrides turned into one frozen, validated L{Config}.

A wrong key or value must stop start-up with a message that names the key,
the value and what was expected, and it must never fall back to a default
silently.  So every value is parsed by the function its key declares, every
problem is collected, and L{ConfigError} reports all of them at once: an
operator fixes the file in one pass instead of one restart per typo.

The table of keys is the L{Config} class itself: each attribute carries its
L{KeySpec} (key name, parse function, default, unit, documentation) in its
attrs metadata, and L{KEYS} is read from it.  Adding a key is adding one
attribute (and a paragraph in docs/configuration.md and conf/jmapd.yaml,
which a test checks).

This module imports nothing of jmapd, so every other module (and
C{jmapd-admin}) can depend on it.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import SplitResult, urlsplit

import attrs
from attrs import field, frozen
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError

__all__ = [
    "KEYS",
    "Config",
    "ConfigError",
    "InvalidValue",
    "KeySpec",
    "ParseContext",
    "Parser",
    "RateLimit",
    "bind_address",
    "boolean",
    "choice",
    "default_config",
    "derived_url",
    "duration",
    "integer",
    "load_config",
    "networks",
    "optional",
    "origin",
    "origins",
    "path",
    "pem_file",
    "positive_duration",
    "rate_limit",
    "readable_file",
    "size",
    "text",
    "url",
]

# The parse functions (bind_address ... url) are public for new keys and for
# tools that read a value, such as a duration on a command line, by the same
# rules.

ENVIRONMENT_PREFIX = "JMAPD_"

#: Environment variables with the prefix that are not configuration keys:
#: JMAPD_CONFIG names the configuration file itself.
NOT_KEYS = frozenset({"JMAPD_CONFIG"})


class ConfigError(Exception):
    """
    The configuration cannot be used.

    It carries I{every} problem found, one line each, so that start-up
    reports them together; C{str()} is the text an operator should see.
    """

    def __init__(self, problems: Sequence[str], path: str | None = None) -> None:
        super().__init__(list(problems), path)
        self.problems: list[str] = list(problems)
        self.path = path

    def __str__(self) -> str:
        where = f" in {self.path}" if self.path is not None else ""
        return "\n".join([f"configuration errors{where}:", *self.problems])


class InvalidValue(ValueError):
    """
    Raised by a key's parse function; the message is the part of the error
    line after the key, such as C{"expected an integer from 0 to 65535, got
    'abc'"}.  Only this exception is turned into a configuration problem, so
    a bug in a parser still shows up as a bug.
    """


@frozen
class RateLimit:
    """
    At most C{count} requests in C{period} seconds, written C{"1000/60"} or
    C{"1000/1m"} in the configuration.
    """

    count: int
    period: float

    def __str__(self) -> str:
        return f"{self.count}/{self.period:g}s"


@frozen
class ParseContext:
    """
    What a parse function needs to know besides the value.

    @ivar base_dir: the directory relative paths are resolved against: the
        configuration file's directory, or the working directory when there
        is no file.
    @ivar text: True when the value is a string from the environment or
        C{--set} rather than a typed YAML value, so that, for example,
        C{"yes"} is a boolean and C{"a, b"} is a list.
    """

    base_dir: str
    text: bool = False


Parser = Callable[[Any, ParseContext], Any]


@frozen
class KeySpec:
    """
    One configuration key: its name in the file, how a value is parsed and
    checked, its default, the unit its parsed value is in, and what it means.

    A parse function accepts what may be written in the file (or, with
    C{context.text}, a string from the environment or C{--set}) and also an
    already-parsed value, returns the parsed value, and raises
    L{InvalidValue} otherwise.  The default goes through the same function.
    """

    name: str
    parse: Parser
    default: Any
    doc: str
    unit: str = ""

    @property
    def attribute(self) -> str:
        """
        The name of the L{Config} attribute holding this key's value.
        """
        return self.name.replace("-", "_")

    @property
    def environment_variable(self) -> str:
        """
        The environment variable that overrides this key.
        """
        return ENVIRONMENT_PREFIX + self.name.upper().replace("-", "_")


# Parse functions.  Each one's error message says what was expected in the
# words of docs/configuration.md, and shows the value as it was written.


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return shown


def _expected(what: str, value: object) -> InvalidValue:
    return InvalidValue(f"expected {what}, got {_show(value)}")


_INTEGER = re.compile(r"[+-]?\d+")


def _as_integer(value: object) -> int | None:
    """
    The integer C{value} stands for, or None: YAML C{true} is not a port and
    C{1.5} is not a count, but C{8080.0} and C{"8080"} are fine.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


def integer(minimum: int, maximum: int | None = None) -> Parser:
    """
    A parser for an integer from C{minimum} to C{maximum} (inclusive).
    """
    if maximum is None:
        what = f"an integer of at least {minimum}"
    else:
        what = f"an integer from {minimum} to {maximum}"

    def parse(value: Any, context: ParseContext) -> int:
        number = _as_integer(value)
        if (
            number is None
            or number < minimum
            or (maximum is not None and number > maximum)
        ):
            raise _expected(what, value)
        return number

    return parse


_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def boolean(value: Any, context: ParseContext) -> bool:
    """
    YAML C{true}/C{false}; from the environment or C{--set} also
    yes/no, on/off and 1/0.
    """
    if isinstance(value, bool):
        return value
    if context.text and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise _expected("true or false (or yes/no, on/off, 1/0)", value)
    raise _expected("true or false", value)


_NUMBER_WITH_UNIT = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-z]*)")


def _number_with_unit(
    value: object, units: Mapping[str, Decimal]
) -> tuple[Decimal, bool] | None:
    """
    Read a number of seconds or bytes written as a plain number or as a
    string such as C{"1.5h"} or C{"32MiB"}.

    @return: the amount in the base unit and whether it was negative, or
        None when C{value} is not written that way.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            amount = Decimal(value)
        except InvalidOperation:
            return None
        if not amount.is_finite():
            return None
        return abs(amount), amount < 0
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    negative = text.startswith("-")
    match = _NUMBER_WITH_UNIT.fullmatch(text.removeprefix("-").strip())
    if match is None or match.group("unit") not in units:
        return None
    return Decimal(match.group("number")) * units[match.group("unit")], negative


_SECONDS = {
    "": Decimal(1),
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
    "d": Decimal(86400),
}


def duration(value: Any, context: ParseContext) -> float:
    """
    A duration: a number of seconds, or a string with a unit (ms, s, m, h,
    d) such as C{"500ms"} or C{"1.5h"}; parsed to float seconds.
    """
    parsed = _number_with_unit(value, _SECONDS)
    if parsed is None:
        raise _expected(
            "a duration (seconds, or a number with a unit ms, s, m, h or d,"
            " such as '5m')",
            value,
        )
    seconds, negative = parsed
    if negative and seconds:
        raise _expected("a duration that is not negative", value)
    return float(seconds)


def positive_duration(value: Any, context: ParseContext) -> float:
    """
    A L{duration} longer than 0, for a timeout: a timeout of 0 would fail
    every attempt at once (or, for some libraries, mean no timeout at
    all), so it is refused rather than taken literally.
    """
    seconds = duration(value, context)
    if seconds == 0:
        raise _expected("a duration longer than 0", value)
    return seconds


_BYTES = {
    "": Decimal(1),
    "b": Decimal(1),
    "kb": Decimal(1000),
    "mb": Decimal(1000**2),
    "gb": Decimal(1000**3),
    "kib": Decimal(1024),
    "mib": Decimal(1024**2),
    "gib": Decimal(1024**3),
}


def size(minimum: int = 0) -> Parser:
    """
    A parser for a size of at least C{minimum} bytes: a number of bytes, or a
    string with a unit (B, KB, MB, GB in powers of 1000; KiB, MiB, GiB in
    powers of 1024; any case) such as C{"50MB"}; parsed to int bytes.
    """

    def parse(value: Any, context: ParseContext) -> int:
        parsed = _number_with_unit(value, _BYTES)
        if parsed is None or parsed[0] != parsed[0].to_integral_value():
            raise _expected(
                "a size (bytes, or a number with a unit B, KB, MB, GB, KiB,"
                " MiB or GiB, such as '50MB')",
                value,
            )
        amount, negative = parsed
        if negative and amount:
            raise _expected("a size that is not negative", value)
        if amount < minimum:
            unit = "byte" if minimum == 1 else "bytes"
            raise _expected(f"a size of at least {minimum} {unit}", value)
        return int(amount)

    return parse


def choice(*options: str) -> Parser:
    """
    A parser for one of a few words (any case, stored in lower case).
    """
    what = "one of " + ", ".join(options)

    def parse(value: Any, context: ParseContext) -> str:
        if isinstance(value, str) and value.strip().lower() in options:
            return value.strip().lower()
        raise _expected(what, value)

    return parse


def optional(parse: Parser) -> Parser:
    """
    Make C{parse} also accept null (and, from the environment or C{--set},
    an empty string) as "not set", which parses to None.
    """

    def parse_optional(value: Any, context: ParseContext) -> Any:
        if value is None or (context.text and value == ""):
            return None
        return parse(value, context)

    return parse_optional


_HOST_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)", re.IGNORECASE)


def _is_host_name(text: str) -> bool:
    labels = text.removesuffix(".").split(".")
    return len(text) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def bind_address(value: Any, context: ParseContext) -> str:
    """
    An IPv4 or IPv6 address (without brackets) or a host name to listen on;
    the empty string means all interfaces.
    """
    if isinstance(value, str):
        text = value.strip()
        if text == "" or _is_host_name(text):
            return text
        try:
            ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            return text
    raise _expected(
        "an IPv4 or IPv6 address or a host name (empty for all interfaces)", value
    )


def path(value: Any, context: ParseContext) -> str:
    """
    A file system path; a relative one is resolved against the directory of
    the configuration file, so the file means the same from any working
    directory.  Stored absolute.
    """
    if not isinstance(value, str) or not value.strip():
        raise _expected("a path", value)
    return os.path.normpath(
        os.path.join(context.base_dir, os.path.expanduser(value.strip()))
    )


def readable_file(value: Any, context: ParseContext) -> str:
    """
    A L{path} to a file that exists and can be read now: a missing
    certificate must stop start-up with its name, not fail at the first TLS
    handshake.
    """
    resolved = path(value, context)
    try:
        with open(resolved, "rb"):
            pass
    except OSError as error:
        raise InvalidValue(f"cannot read {resolved!r}: {error.strerror}") from None
    return resolved


_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def pem_file(what: str, labels: Sequence[str]) -> Parser:
    """
    A parser for a L{readable_file} in PEM form, holding C{what}: a block
    whose label (C{-----BEGIN LABEL-----}) is one of C{labels}.  A file
    that is not PEM (DER, an empty file, the key where the certificate
    belongs) must stop start-up with its key and name here, not with an
    OpenSSL error list once the configuration has been accepted.
    """
    accepted = frozenset(label.encode("ascii") for label in labels)
    expected = (
        f"a PEM file holding {what} (a '-----BEGIN {labels[0]}-----' block)"
    )

    def parse(value: Any, context: ParseContext) -> str:
        resolved = path(value, context)
        try:
            with open(resolved, "rb") as f:
                content = f.read()
        except OSError as error:
            raise InvalidValue(f"cannot read {resolved!r}: {error.strerror}") from None
        if not any(
            match.group(1) in accepted for match in _PEM_BLOCK.finditer(content)
        ):
            raise InvalidValue(f"expected {expected}, got {resolved!r}")
        return resolved

    return parse


#: What a certificate and a private key file must hold.  An encrypted key
#: is refused: jmapd has no passphrase to open it with.
certificate_file = pem_file("a certificate", ["CERTIFICATE"])
private_key_file = pem_file(
    "an unencrypted private key",
    ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY"],
)


def _split(text: str) -> SplitResult | None:
    """
    C{text} split as a URL, or None when it is not one or its port is not a
    number from 0 to 65535 (which C{urlsplit} only finds out on C{.port}).
    """
    try:
        parts = urlsplit(text)
        if parts.port is None and parts.netloc.endswith(":"):
            return None
    except ValueError:
        return None
    return parts


def _http_url(value: object) -> SplitResult | None:
    """
    C{value} split, when it is an absolute http(s) URL with a host, a valid
    port and no user name, query or fragment; None otherwise.
    """
    if not isinstance(value, str):
        return None
    text = value.strip()
    parts = _split(text)
    if parts is None or "?" in text or "#" in text:
        return None
    if (
        parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
    ):
        return None
    return parts


def url(value: Any, context: ParseContext) -> str:
    """
    An absolute http:// or https:// URL without query or fragment; a
    trailing slash is dropped so that paths can be appended to it.
    """
    if _http_url(value) is None:
        raise _expected(
            "an absolute http:// or https:// URL without query or fragment", value
        )
    text: str = value.strip()
    return text.rstrip("/")


_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: SplitResult) -> str:
    """
    The origin as a browser sends it in an C{Origin} header: lower-case
    scheme and host, no default port.
    """
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin(value: Any, context: ParseContext) -> str:
    """
    One origin, C{scheme://host[:port]} without a path (a lone trailing
    slash is tolerated), normalised the way browsers send it.
    """
    what = "an origin scheme://host[:port] without a path"
    if not isinstance(value, str):
        raise _expected(what, value)
    text = value.strip()
    parts = _split(text)
    if (
        parts is None
        or not _SCHEME.fullmatch(parts.scheme.lower())
        or not parts.hostname
        or parts.path not in ("", "/")
        or "?" in text
        or "#" in text
        or "@" in parts.netloc
    ):
        raise _expected(what, value)
    return _origin(parts)


def origins(value: Any, context: ParseContext) -> tuple[str, ...]:
    """
    A list of origins.  From the environment or C{--set} it is written as a
    YAML flow list (C{"[a, b]"}) or separated by commas (C{"a, b"}).
    """
    items: object = value
    if context.text and isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = YAML(typ="safe").load(text)
            except YAMLError:
                raise _expected("a list of origins such as '[a, b]'", value) from None
        else:
            items = [item.strip() for item in text.split(",") if item.strip()]
    if not isinstance(items, list | tuple):
        raise _expected("a list of origins (scheme://host[:port])", value)
    return tuple(origin(item, context) for item in items)


def rate_limit(value: Any, context: ParseContext) -> RateLimit:
    """
    A rate limit C{COUNT/PERIOD}: C{"1000/60"} or C{"1000/1m"} is 1000
    requests per 60 seconds.  COUNT is at least 1, PERIOD a positive
    L{duration}.
    """
    if isinstance(value, RateLimit):
        value = f"{value.count}/{value.period!r}"
    what = (
        "a rate limit COUNT/PERIOD such as '1000/60' (1000 requests per 60"
        " seconds) or '1000/1m'"
    )
    if not isinstance(value, str) or value.count("/") != 1:
        raise _expected(what, value)
    count_text, period_text = value.split("/")
    count = _as_integer(count_text)
    try:
        period = duration(period_text, context)
    except InvalidValue:
        raise _expected(what, value) from None
    if count is None or count < 1 or period <= 0:
        raise _expected(what, value)
    return RateLimit(count=count, period=period)


def text(value: Any, context: ParseContext) -> str:
    """
    A non-empty string on one line, such as a user name or a password;
    surrounding white space is kept (it may be part of a password).
    """
    if not isinstance(value, str) or not value or "\n" in value or "\r" in value:
        raise _expected("a non-empty string on one line", value)
    return value


def networks(value: Any, context: ParseContext) -> tuple[str, ...]:
    """
    A list of IP addresses and networks in CIDR notation (C{127.0.0.1},
    C{10.0.0.0/8}, C{::1}); from the environment or C{--set} written as a
    YAML flow list or separated by commas.  Parsed to normalised network
    strings (C{127.0.0.1/32}); host bits set in a network are an error.
    """
    what = "a list of IP addresses or networks such as '[127.0.0.1, 10.0.0.0/8, ::1]'"
    items: object = value
    if context.text and isinstance(value, str):
        text_value = value.strip()
        if text_value.startswith("["):
            try:
                items = YAML(typ="safe").load(text_value)
            except YAMLError:
                raise _expected(what, value) from None
        else:
            items = [item.strip() for item in text_value.split(",") if item.strip()]
    if not isinstance(items, list | tuple):
        raise _expected(what, value)
    parsed = []
    for item in items:
        if not isinstance(item, str):
            raise _expected(what, value)
        try:
            parsed.append(str(ipaddress.ip_network(item.strip())))
        except ValueError:
            raise _expected(f"{what}; {item!r} is not one", value) from None
    return tuple(parsed)


def _database_url(value: Any, context: ParseContext) -> str:
    """
    A PostgreSQL connection URL, C{postgresql://user:password@host:port/db}
    (libpq's form; C{postgres://} too; the host may be left out for the
    local socket, the password for C{~/.pgpass}).
    """
    what = "a PostgreSQL URL such as 'postgresql://jmapd:secret@127.0.0.1:5432/jmapd'"
    if not isinstance(value, str):
        raise _expected(what, value)
    parts = _split(value.strip())
    if (
        parts is None
        or parts.scheme.lower() not in ("postgresql", "postgres")
        or not parts.path.strip("/")
        or "\n" in value
    ):
        raise _expected(what + " (with a database name)", value)
    return value.strip()


_LOG_LEVELS = ("error", "warn", "info", "debug", "trace")


def _key(
    name: str, parse: Parser, default: Any, doc: str, unit: str = ""
) -> dict[str, KeySpec]:
    """
    The attrs metadata that makes a L{Config} attribute the key C{name}.
    Key attributes have no attrs default: a L{Config} is only built from a
    complete set of parsed values, and the default goes through the parser
    like any other value.
    """
    return {_SPEC: KeySpec(name=name, parse=parse, default=default, doc=doc, unit=unit)}


_SPEC = "jmapd.config.key"


@frozen(kw_only=True)
class Config:
    """
    The validated configuration: one attribute per key (the key with '-'
    replaced by '_'), in the parsed unit (seconds, bytes, absolute paths).

    Build it with L{load_config} or L{default_config}; both apply the rules
    that involve several keys (the jmap-url and cors-allowed-origins
    defaults, certificate and key set together).
    """

    config_path: str | None
    """The absolute path of the file it was read from; None for defaults."""

    jmap_url_defaulted: bool
    """True when jmap-url was derived, so the service can warn about it."""

    jmap_bind_addr: str = field(
        metadata=_key(
            "jmap-bind-addr",
            bind_address,
            "",
            "Address (IPv4, IPv6 without brackets, or host name) the HTTP listener"
            " binds to; empty means all interfaces.",
        )
    )
    jmap_port: int = field(
        metadata=_key(
            "jmap-port",
            integer(0, 65535),
            8080,
            "TCP port of the HTTP listener; 0 picks any free port (tests use it).",
        )
    )
    jmap_url: str = field(
        metadata=_key(
            "jmap-url",
            optional(url),
            None,
            "The public base URL clients reach jmapd at, used in the session"
            " resource; without it, derived from jmap-bind-addr and jmap-port"
            " (a warning is logged, since behind a proxy it is wrong).",
        )
    )
    jmap_cert_path: str | None = field(
        metadata=_key(
            "jmap-cert-path",
            optional(certificate_file),
            None,
            "PEM certificate (chain) for HTTPS; set together with jmap-key-path.",
        )
    )
    jmap_key_path: str | None = field(
        metadata=_key(
            "jmap-key-path",
            optional(private_key_file),
            None,
            "PEM private key for HTTPS; set together with jmap-cert-path.",
        )
    )
    log_level: str = field(
        metadata=_key(
            "log-level",
            choice(*_LOG_LEVELS),
            "info",
            "Least severe log events written: error, warn, info, debug or trace.",
        )
    )
    strict_cors: bool = field(
        metadata=_key(
            "strict-cors",
            boolean,
            False,
            "When true, CORS headers are sent only to cors-allowed-origins;"
            " when false, to any origin.",
        )
    )
    cache_size_ids: int = field(
        metadata=_key(
            "cache-size-ids",
            size(),
            33554432,
            "Memory bound of the ids cache; 0 disables it.",
            "bytes",
        )
    )
    cache_tti_ids: float = field(
        metadata=_key(
            "cache-tti-ids",
            duration,
            3600.0,
            "Time-to-idle of ids cache entries; 0 disables the cache.",
            "seconds",
        )
    )
    cache_tti_sharings: float = field(
        metadata=_key(
            "cache-tti-sharings",
            duration,
            300.0,
            "Time-to-idle of the sharings cache (accounts shared with a user);"
            " 0 disables it.",
            "seconds",
        )
    )
    cache_tti_acl: float = field(
        metadata=_key(
            "cache-tti-acl",
            duration,
            3600.0,
            "Time-to-idle of the acl cache (a principal's rights on a shared"
            " object); 0 disables it.",
            "seconds",
        )
    )
    cache_tti_recipients: float = field(
        metadata=_key(
            "cache-tti-recipients",
            duration,
            86400.0,
            "Time-to-idle of the recipients cache (LMTP address to account);"
            " 0 disables it.",
            "seconds",
        )
    )
    worker_pool_size: int = field(
        metadata=_key(
            "worker-pool-size",
            integer(1),
            os.cpu_count() or 1,
            "Threads running database and file work; default the number of CPUs.",
        )
    )
    db_path: str = field(
        metadata=_key(
            "db-path",
            path,
            "data",
            "Data directory (database and blobs); relative to the configuration"
            " file's directory.",
        )
    )
    http_request_timeout: float = field(
        metadata=_key(
            "http-request-timeout",
            positive_duration,
            30.0,
            "How long a client may take to send a request's header, from its first"
            " byte, and then its body; past either, it gets 408 and the connection"
            " is closed.",
            "seconds",
        )
    )
    use_forwarded_header: bool = field(
        metadata=_key(
            "use-forwarded-header",
            boolean,
            False,
            "Trust Forwarded / X-Forwarded-For for the client address; only"
            " behind a reverse proxy that sets them.",
        )
    )
    max_size_upload: int = field(
        metadata=_key(
            "max-size-upload",
            size(1),
            50000000,
            "Largest blob upload accepted (maxSizeUpload).",
            "bytes",
        )
    )
    max_concurrent_uploads: int = field(
        metadata=_key(
            "max-concurrent-uploads",
            integer(1),
            4,
            "Uploads one account may run at once (maxConcurrentUpload).",
        )
    )
    max_size_request: int = field(
        metadata=_key(
            "max-size-request",
            size(1),
            10000000,
            "Largest API request body accepted (maxSizeRequest).",
            "bytes",
        )
    )
    max_concurrent_requests: int = field(
        metadata=_key(
            "max-concurrent-requests",
            integer(1),
            4,
            "API requests one account may run at once (maxConcurrentRequests).",
        )
    )
    max_calls_in_request: int = field(
        metadata=_key(
            "max-calls-in-request",
            integer(1),
            16,
            "Method calls in one API request (maxCallsInRequest).",
        )
    )
    max_objects_in_get: int = field(
        metadata=_key(
            "max-objects-in-get",
            integer(1),
            500,
            "Ids in one /get call (maxObjectsInGet).",
        )
    )
    max_objects_in_set: int = field(
        metadata=_key(
            "max-objects-in-set",
            integer(1),
            500,
            "Creates, updates and destroys in one /set call (maxObjectsInSet).",
        )
    )
    query_max_results: int = field(
        metadata=_key(
            "query-max-results",
            integer(1),
            5000,
            "Ids one /query call returns at most.",
        )
    )
    changes_max_results: int = field(
        metadata=_key(
            "changes-max-results",
            integer(1),
            5000,
            "Ids one /changes call returns at most.",
        )
    )
    blob_temp_ttl: float = field(
        metadata=_key(
            "blob-temp-ttl",
            duration,
            3600.0,
            "How long an uploaded blob that nothing references is kept.",
            "seconds",
        )
    )
    max_changelog_entries: int = field(
        metadata=_key(
            "max-changelog-entries",
            integer(1),
            10000,
            "Records of destroyed objects kept per account in the changelog; older"
            " ones are compacted and /changes from before them answers"
            " cannotCalculateChanges.",
        )
    )
    mailbox_name_max_len: int = field(
        metadata=_key(
            "mailbox-name-max-len",
            integer(100, 10000),
            255,
            "Longest Mailbox name, in octets of UTF-8 (maxSizeMailboxName;"
            " RFC 8621 requires at least 100).",
            "bytes",
        )
    )
    mailbox_max_total: int = field(
        metadata=_key("mailbox-max-total", integer(1), 1000, "Most Mailboxes one account may have.")
    )
    mailbox_max_depth: int = field(
        metadata=_key(
            "mailbox-max-depth",
            integer(1, 1000),
            10,
            "Deepest Mailbox nesting (maxMailboxDepth): a top-level Mailbox has depth 1.",
        )
    )
    mail_max_size: int = field(
        metadata=_key(
            "mail-max-size",
            size(1),
            104857600,
            "Largest message accepted by import, creation and delivery.",
            "bytes",
        )
    )
    mail_attachments_max_size: int = field(
        metadata=_key(
            "mail-attachments-max-size",
            size(1),
            50000000,
            "Largest total size of the attachments of an Email created by a client"
            " (maxSizeAttachmentsPerEmail).",
            "bytes",
        )
    )
    mail_import_max_items: int = field(
        metadata=_key("mail-import-max-items", integer(1), 5, "Most Emails one Email/import call may import.")
    )
    mail_parse_max_items: int = field(
        metadata=_key("mail-parse-max-items", integer(1), 5, "Most blobs one Email/parse call may parse.")
    )
    mail_max_mailboxes_per_email: int = field(
        metadata=_key(
            "mail-max-mailboxes-per-email",
            integer(1),
            100,
            "Most Mailboxes one Email may be in (maxMailboxesPerEmail).",
        )
    )
    mail_max_keywords_per_email: int = field(
        metadata=_key(
            "mail-max-keywords-per-email",
            integer(1),
            100,
            "Most keywords one Email may have; more is the SetError tooManyKeywords.",
        )
    )
    event_source_throttle: float = field(
        metadata=_key(
            "event-source-throttle",
            duration,
            1.0,
            "Shortest time between two state events on one EventSource or WebSocket"
            " push connection; changes in between are coalesced into the next event.",
            "seconds",
        )
    )
    push_allow_insecure: bool = field(
        metadata=_key(
            "push-allow-insecure",
            boolean,
            False,
            "Accept http:// PushSubscription URLs on loopback addresses (for tests);"
            " otherwise only https:// URLs are accepted.",
        )
    )
    push_timeout: float = field(
        metadata=_key(
            "push-timeout",
            positive_duration,
            10.0,
            "How long one POST to a PushSubscription URL may take before it counts as failed.",
            "seconds",
        )
    )
    push_attempts_max: int = field(
        metadata=_key(
            "push-attempts-max",
            integer(1),
            3,
            "POSTs made for one push notification before it is given up.",
        )
    )
    push_retry_interval: float = field(
        metadata=_key(
            "push-retry-interval",
            duration,
            5.0,
            "Wait before a failed push POST is retried.",
            "seconds",
        )
    )
    push_attempt_interval: float = field(
        metadata=_key(
            "push-attempt-interval",
            duration,
            60.0,
            "Wait after a push notification was given up before the next change is"
            " pushed to the same URL.",
            "seconds",
        )
    )
    push_throttle: float = field(
        metadata=_key(
            "push-throttle",
            duration,
            1.0,
            "Shortest time between two POSTs to one PushSubscription; changes in"
            " between are coalesced.",
            "seconds",
        )
    )
    push_max_total: int = field(
        metadata=_key(
            "push-max-total",
            integer(1),
            100,
            "Most PushSubscriptions one account may have.",
        )
    )
    ws_heartbeat_interval: float = field(
        metadata=_key(
            "ws-heartbeat-interval",
            duration,
            30.0,
            "Seconds between WebSocket pings the server sends; 0 sends none.",
            "seconds",
        )
    )
    ws_client_timeout: float = field(
        metadata=_key(
            "ws-client-timeout",
            positive_duration,
            60.0,
            "Seconds a WebSocket client may take to answer a ping before the"
            " connection is closed.",
            "seconds",
        )
    )
    smtp_relay_host: str | None = field(
        metadata=_key(
            "smtp-relay-host",
            optional(bind_address),
            None,
            "Host name or IP address of the SMTP relay (submission server) that"
            " EmailSubmissions and vacation replies leave through; unset disables"
            " sending, and then the submission capability is not advertised.",
        )
    )
    smtp_relay_port: int = field(
        metadata=_key("smtp-relay-port", integer(1, 65535), 587, "TCP port of the SMTP relay.")
    )
    smtp_relay_auth: str | None = field(
        metadata=_key(
            "smtp-relay-auth",
            optional(text),
            None,
            "User name jmapd authenticates to the relay with (SMTP AUTH); unset:"
            " no authentication.",
        )
    )
    smtp_relay_secret: str | None = field(
        repr=False,
        metadata=_key(
            "smtp-relay-secret",
            optional(text),
            None,
            "Password for smtp-relay-auth (or use smtp-relay-secret-file).",
        ),
    )
    smtp_relay_secret_file: str | None = field(
        metadata=_key(
            "smtp-relay-secret-file",
            optional(readable_file),
            None,
            "File whose first line is the password for smtp-relay-auth; used when"
            " smtp-relay-secret is not set.",
        )
    )
    smtp_relay_tls: str = field(
        metadata=_key(
            "smtp-relay-tls",
            choice("starttls", "tls", "none"),
            "starttls",
            "How the connection to the relay is secured: starttls (required),"
            " tls (implicit TLS, usually port 465) or none.",
        )
    )
    smtp_relay_ca_path: str | None = field(
        metadata=_key(
            "smtp-relay-ca-path",
            optional(certificate_file),
            None,
            "PEM file of the certificate authorities trusted for the relay's"
            " certificate; unset: the system's trust store.",
        )
    )
    smtp_relay_timeout: float = field(
        metadata=_key(
            "smtp-relay-timeout",
            positive_duration,
            30.0,
            "How long jmapd waits for each answer of the relay (and to connect)"
            " before the attempt counts as a temporary failure.",
            "seconds",
        )
    )
    submission_hold: float = field(
        metadata=_key(
            "submission-hold",
            duration,
            0.0,
            "How long a new EmailSubmission waits before it is relayed, during"
            " which it can be canceled (undoStatus pending).",
            "seconds",
        )
    )
    submission_max_delayed_send: float = field(
        metadata=_key(
            "submission-max-delayed-send",
            duration,
            86400.0,
            "Longest delay a client may ask for with FUTURERELEASE (maxDelayedSend);"
            " 0 disables delayed sending.",
            "seconds",
        )
    )
    submission_max_recipients: int = field(
        metadata=_key(
            "submission-max-recipients",
            integer(1),
            100,
            "Most envelope recipients of one EmailSubmission; more is the SetError"
            " tooManyRecipients.",
        )
    )
    lmtp_bind_addr: str = field(
        metadata=_key(
            "lmtp-bind-addr",
            bind_address,
            "127.0.0.1",
            "Address the LMTP listener (mail delivery from the MTA) binds to;"
            " empty means all interfaces.",
        )
    )
    lmtp_port: int = field(
        metadata=_key(
            "lmtp-port",
            integer(0, 65535),
            11200,
            "TCP port of the LMTP listener; 0 disables LMTP delivery.",
        )
    )
    lmtp_cert_path: str | None = field(
        metadata=_key(
            "lmtp-cert-path",
            optional(certificate_file),
            None,
            "PEM certificate (chain) offered with STARTTLS on the LMTP listener;"
            " set together with lmtp-key-path.",
        )
    )
    lmtp_key_path: str | None = field(
        metadata=_key(
            "lmtp-key-path",
            optional(private_key_file),
            None,
            "PEM private key for LMTP STARTTLS; set together with lmtp-cert-path.",
        )
    )
    lmtp_tls_only: bool = field(
        metadata=_key(
            "lmtp-tls-only",
            boolean,
            False,
            "Refuse MAIL until the LMTP client has started TLS (needs"
            " lmtp-cert-path and lmtp-key-path).",
        )
    )
    lmtp_trusted_ips: tuple[str, ...] = field(
        metadata=_key(
            "lmtp-trusted-ips",
            networks,
            ("127.0.0.1", "::1"),
            "Addresses and networks (CIDR) allowed to connect to the LMTP listener;"
            " others are refused when they connect.",
        )
    )
    lmtp_spool: bool = field(
        metadata=_key(
            "lmtp-spool",
            boolean,
            False,
            "Answer 250 to a message once it is flushed to a spool file under db-path"
            " (delivery-spool.sqlite), and file it into the mailboxes right after, in"
            " larger groups, in a process of its own; false: answer once it is filed"
            " (docs/delivery.md).",
        )
    )
    vacation_reply_interval: float = field(
        metadata=_key(
            "vacation-reply-interval",
            duration,
            604800.0,
            "A sender gets at most one vacation auto-reply per account in this time.",
            "seconds",
        )
    )
    db_url: str | None = field(
        metadata=_key(
            "db-url",
            optional(_database_url),
            None,
            "PostgreSQL database holding all metadata, shared by every node, such as"
            " postgresql://jmapd:secret@127.0.0.1:5432/jmapd; unset: SQLite under"
            " db-path.",
        )
    )
    db_pool_size: int | None = field(
        metadata=_key(
            "db-pool-size",
            optional(integer(1)),
            None,
            "Connections to PostgreSQL each node keeps (db-url); unset: worker-pool-size,"
            " one per worker thread.",
            "connections",
        )
    )
    node_id: str | None = field(
        metadata=_key(
            "node-id",
            optional(text),
            None,
            "This node's name, shown in logs and given to PostgreSQL as the"
            " connections' application_name; unset: the host name.",
        )
    )
    blob_store: str = field(
        metadata=_key(
            "blob-store",
            choice("files", "database"),
            "files",
            "Where raw messages and uploads are kept: files (under db-path, which"
            " several nodes must then share; delivered messages are first staged in"
            " the metadata database and moved to their files about a second later)"
            " or database (in the metadata database: PostgreSQL of db-url, or SQLite"
            " under db-path).",
        )
    )
    rate_limit_authenticated: RateLimit = field(
        metadata=_key(
            "rate-limit-authenticated",
            rate_limit,
            RateLimit(1000, 60.0),
            "Requests an authenticated user may make per period.",
            "requests/seconds",
        )
    )
    rate_limit_anonymous: RateLimit = field(
        metadata=_key(
            "rate-limit-anonymous",
            rate_limit,
            RateLimit(100, 60.0),
            "Requests one client address may make unauthenticated per period.",
            "requests/seconds",
        )
    )
    rate_limit_auth: RateLimit = field(
        metadata=_key(
            "rate-limit-auth",
            rate_limit,
            RateLimit(10, 60.0),
            "Authentication attempts one client address may make per period.",
            "requests/seconds",
        )
    )
    cors_allowed_origins: tuple[str, ...] = field(
        metadata=_key(
            "cors-allowed-origins",
            optional(origins),
            None,
            "Origins (scheme://host[:port]) allowed to make cross-origin"
            " requests under strict-cors, and always to open WebSockets;"
            " default: the origin of jmap-url.",
        )
    )

    @property
    def tls(self) -> bool:
        """
        Whether the listener serves HTTPS (certificate and key both set).
        """
        return self.jmap_cert_path is not None and self.jmap_key_path is not None


KEYS: Mapping[str, KeySpec] = {
    spec.name: spec
    for spec in (f.metadata.get(_SPEC) for f in attrs.fields(Config))
    if spec is not None
}
"""Every configuration key by name, in documentation order."""


@frozen
class _Value:
    """
    A raw value of one key and where it came from.

    @ivar source: said in error messages, such as C{"from JMAPD_JMAP_PORT"};
        None for the configuration file, which the first line already names.
    """

    raw: Any
    source: str | None
    text: bool


def _unknown(name: object, source: str | None, hint: str | None) -> str:
    where = f" ({source})" if source else ""
    message = f"{name}{where}: unknown key"
    if hint is not None:
        message += f"; did you mean {hint}?"
    return message


def _close_key(name: str) -> str | None:
    matches = difflib.get_close_matches(name, list(KEYS), n=1)
    return matches[0] if matches else None


def _read_file(path: str, problems: list[str]) -> dict[str, _Value]:
    """
    The values in the YAML file at C{path}; problems with the file as a
    whole, and unknown keys, go to C{problems}.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        problems.append(f"cannot read the configuration file: {reason}")
        return {}
    try:
        document = YAML(typ="safe").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        reason = error.problem or error.context or "syntax error"
        problems.append(f"{where}not valid YAML: {reason}")
        return {}
    except YAMLError as error:
        problems.append(f"not valid YAML: {error}")
        return {}
    if document is None:
        return {}
    if not isinstance(document, dict):
        problems.append(
            "expected a mapping of keys to values at the top of the file,"
            f" got {type(document).__name__} {_show(document)}"
        )
        return {}
    values = {}
    for name, raw in document.items():
        if name not in KEYS:
            hint = _close_key(name) if isinstance(name, str) else None
            problems.append(_unknown(name, None, hint and repr(hint)))
        else:
            values[name] = _Value(raw, None, text=False)
    return values


def _read_environment(
    environ: Mapping[str, str], problems: list[str]
) -> dict[str, _Value]:
    """
    The values of C{JMAPD_*} environment variables; one that names no key is
    a problem, since it is most likely a misspelt override.
    """
    variables = {spec.environment_variable: spec for spec in KEYS.values()}
    values = {}
    for variable in sorted(environ):
        if not variable.startswith(ENVIRONMENT_PREFIX) or variable in NOT_KEYS:
            continue
        spec = variables.get(variable)
        if spec is None:
            matches = difflib.get_close_matches(variable, list(variables), n=1)
            problems.append(
                f"{variable}: no configuration key is named by this environment"
                " variable" + (f"; did you mean {matches[0]}?" if matches else "")
            )
            continue
        values[spec.name] = _Value(environ[variable], f"from {variable}", text=True)
    return values


def _read_overrides(overrides: Sequence[str], problems: list[str]) -> dict[str, _Value]:
    """
    The values of C{--set key=value} options; the last one for a key wins.
    """
    values = {}
    for override in overrides:
        name, equals, raw = override.partition("=")
        name = name.strip()
        if not equals:
            problems.append(f"--set {override!r}: expected key=value")
        elif name not in KEYS:
            hint = _close_key(name)
            problems.append(_unknown(name, "from --set", hint and repr(hint)))
        else:
            values[name] = _Value(raw, "from --set", text=True)
    return values


def derived_url(bind_addr: str, port: int, tls: bool) -> str:
    """
    The URL a client on this host would use: the bind address, or
    C{localhost} when listening on all interfaces.
    """
    host = bind_addr
    try:
        address = ipaddress.ip_address(bind_addr.split("%")[0])
    except ValueError:
        address = None
    if bind_addr == "" or (address is not None and address.is_unspecified):
        host = "localhost"
    elif address is not None and address.version == 6:
        host = "[" + bind_addr.replace("%", "%25") + "]"
    scheme = "https" if tls else "http"
    return f"{scheme}://{host}:{port}"


def _directory_problem(directory: str) -> str | None:
    """
    Why jmapd could not create or write the directory C{directory}, or
    None when it looks usable.  Nothing is created here: the check only
    looks, so that a wrong db-path is reported with the other problems
    instead of as a bare OS error once the service is being built.
    """
    if os.path.lexists(directory):
        if not os.path.isdir(directory):
            return "it is not a directory"
        if not os.access(directory, os.W_OK | os.X_OK):
            return "it is not writable"
        return None
    parent = os.path.dirname(directory)
    while parent != directory and not os.path.lexists(parent):
        directory, parent = parent, os.path.dirname(parent)
    if not os.path.isdir(parent):
        return f"{parent!r} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"it does not exist and {parent!r} is not writable"
    return None


def _pair_problem(parsed: Mapping[str, Any], cert: str, key: str, purpose: str) -> str | None:
    """
    The problem of a certificate and private key pair (both parsed) of
    which only one is set, or L{None}: they are used together, for
    C{purpose}, or not at all.
    """
    if (parsed[cert] is None) == (parsed[key] is None):
        return None
    present, missing = (cert, key) if parsed[cert] is not None else (key, cert)
    return f"{cert}, {key}: set both to {purpose}, or neither; {present} is set but {missing} is not"


def _rule_problems(parsed: Mapping[str, Any]) -> list[str]:
    """
    The problems between keys that each parse well on its own: settings
    that would otherwise only fail once listeners are up (LMTP STARTTLS),
    at the first message sent (relay authentication without a password),
    or be ignored without a word (a relay password without a user name).
    A key that did not parse is left out: its own problem is reported.
    """
    problems = []

    def given(name: str) -> bool:
        return parsed.get(name) is not None

    cert, key = "lmtp-cert-path", "lmtp-key-path"
    if cert in parsed and key in parsed:
        problem = _pair_problem(parsed, cert, key, "offer STARTTLS")
        if problem is not None:
            problems.append(problem)
    if (
        parsed.get("lmtp-tls-only")
        and cert in parsed
        and key in parsed
        and not (given(cert) and given(key))
    ):
        problems.append(
            f"lmtp-tls-only: true needs {cert} and {key}"
            " (a client cannot start TLS without them)"
        )

    auth, secret, secret_file = (
        "smtp-relay-auth",
        "smtp-relay-secret",
        "smtp-relay-secret-file",
    )
    if all(name in parsed for name in (auth, secret, secret_file)):
        if given(auth) and not (given(secret) or given(secret_file)):
            problems.append(
                f"{auth}: set {secret} or {secret_file} too; there is no"
                f" password to authenticate to the relay as {parsed[auth]!r}"
            )
        for name in (secret, secret_file):
            if given(name) and not given(auth):
                problems.append(
                    f"{name}: has no effect without {auth} (the user name"
                    " to authenticate to the relay with)"
                )

    # db-path holds the SQLite database, the blob files unless they are
    # kept in PostgreSQL, and the delivery spool.
    uses_db_path = not given("db-url") or parsed.get("blob-store") == "files" or bool(parsed.get("lmtp-spool"))
    if "db-path" in parsed and "db-url" in parsed and uses_db_path:
        problem = _directory_problem(parsed["db-path"])
        if problem is not None:
            problems.append(
                "db-path: expected a directory jmapd can create or write to,"
                f" got {parsed['db-path']!r}: {problem}"
            )
    return problems


def _build(
    values: Mapping[str, _Value],
    base_dir: str,
    config_path: str | None,
    problems: list[str],
) -> Config:
    """
    Parse every key's winning value, apply the rules between keys, and
    return the L{Config}; or raise L{ConfigError} with C{problems} and every
    problem found here.
    """
    parsed: dict[str, Any] = {}
    for name, spec in KEYS.items():
        value = values.get(name) or _Value(spec.default, "default", text=False)
        try:
            parsed[name] = spec.parse(
                value.raw, ParseContext(base_dir=base_dir, text=value.text)
            )
        except InvalidValue as error:
            where = f" ({value.source})" if value.source else ""
            problems.append(f"{name}{where}: {error}")

    cert, key = "jmap-cert-path", "jmap-key-path"
    tls = False
    if cert in parsed and key in parsed:
        problem = _pair_problem(parsed, cert, key, "serve HTTPS")
        if problem is not None:
            problems.append(problem)
        tls = parsed[cert] is not None and parsed[key] is not None

    problems.extend(_rule_problems(parsed))

    url_defaulted = parsed.get("jmap-url", "") is None
    if url_defaulted and "jmap-bind-addr" in parsed and "jmap-port" in parsed:
        parsed["jmap-url"] = derived_url(
            parsed["jmap-bind-addr"], parsed["jmap-port"], tls
        )
    if parsed.get("cors-allowed-origins", ()) is None and parsed.get("jmap-url"):
        parsed["cors-allowed-origins"] = (_origin(urlsplit(parsed["jmap-url"])),)

    if problems:
        raise ConfigError(problems, config_path)
    return Config(
        config_path=config_path,
        jmap_url_defaulted=url_defaulted,
        **{KEYS[name].attribute: value for name, value in parsed.items()},
    )


def load_config(
    path: str | None,
    environ: Mapping[str, str] | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """
    Read the configuration: defaults, then the YAML file at C{path} (None
    for none), then C{JMAPD_*} variables of C{environ} (None for
    C{os.environ}), then C{overrides} (C{"key=value"} strings from
    C{--set}); later ones win.

    @raise ConfigError: listing every problem found, never only the first.
    """
    if environ is None:
        environ = os.environ
    problems: list[str] = []
    values: dict[str, _Value] = {}
    config_path = None
    base_dir = os.getcwd()
    if path is not None:
        config_path = os.path.abspath(path)
        base_dir = os.path.dirname(config_path)
        values.update(_read_file(config_path, problems))
    values.update(_read_environment(environ, problems))
    values.update(_read_overrides(overrides, problems))
    return _build(values, base_dir, config_path, problems)


def default_config(**changes: Any) -> Config:
    """
    The default configuration with C{changes} applied, for tests and for
    applications embedding jmapd: C{default_config(jmap_port=0,
    db_path="/tmp/x")}.  Changes are Python attribute names and parsed
    values (seconds, bytes, L{RateLimit}); they are still checked, and the
    rules between keys still apply.  Relative paths resolve against the
    working directory.

    @raise TypeError: for a name that is not a key's attribute.
    @raise ConfigError: for a value its key does not accept.
    """
    by_attribute = {spec.attribute: spec for spec in KEYS.values()}
    values = {}
    for attribute, raw in changes.items():
        spec = by_attribute.get(attribute)
        if spec is None:
            matches = difflib.get_close_matches(attribute, list(by_attribute), n=1)
            hint = f"; did you mean {matches[0]!r}?" if matches else ""
            raise TypeError(f"default_config: no configuration key {attribute!r}{hint}")
        values[spec.name] = _Value(raw, "from default_config", text=False)
    return _build(values, os.getcwd(), None, [])
