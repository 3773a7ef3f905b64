"""ProfitDLL credentials: loaded from the environment or a file outside the repo, never shown.

Sources, in this order:

1. ``file`` (the argument) or, when that is ``None``, the path in the
   environment variable ``PROFIT_CREDENTIALS_FILE``: a text file of
   ``KEY=value`` lines, e.g.::

       # ~/.config/quantumtrader/profit.env  (chmod 600)
       PROFIT_KEY=...
       PROFIT_USER=...
       PROFIT_PASSWORD=...

   Blank lines and ``#`` comments are ignored, an ``export`` prefix is
   allowed (so the same file can be ``source``-d by a shell) and one pair of
   matching surrounding quotes is stripped from a value. Nothing else is
   interpreted (no ``$VAR`` expansion, no escapes): a password may contain any
   character except a newline. The file must lie **outside the repository**
   (checked on the path as given and on its symlink target) so it can never
   be committed; on POSIX a file readable by group or others is accepted with
   a warning.
2. Otherwise the environment variables ``PROFIT_KEY``, ``PROFIT_USER`` and
   ``PROFIT_PASSWORD``.

The two sources are not mixed: one source provides all three values, so a
stale variable in the shell cannot silently pair with a file's password. An
empty value counts as missing.

Values never appear in ``repr``/``str``, in ``CredentialsError`` messages
(which name variables, files and line numbers only), or in log lines when
``RedactingFilter`` is attached to the handlers (``install_log_redaction``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("quantumtrader.credentials")

ENV_KEY = "PROFIT_KEY"
ENV_USER = "PROFIT_USER"
ENV_PASSWORD = "PROFIT_PASSWORD"
ENV_FILE = "PROFIT_CREDENTIALS_FILE"
VARIABLES = (ENV_KEY, ENV_USER, ENV_PASSWORD)
REDACTED = "***"
REPO_ROOT = Path(__file__).resolve().parents[3]


class CredentialsError(ValueError):
    """Credentials missing or unusable. The message names variables/files, never values."""


@dataclass(frozen=True, repr=False)
class Credentials:
    """Activation key, user and password for ``DLLInitializeLogin``/``DLLInitializeMarketLogin``."""

    key: str
    user: str
    password: str

    def __repr__(self) -> str:
        def shown(value: str) -> str:
            return "<set>" if value else "<empty>"

        return f"Credentials(key={shown(self.key)}, user={shown(self.user)}, password={shown(self.password)})"

    __str__ = __repr__

    def values(self) -> tuple[str, ...]:
        """The non-empty secret values (what ``redact`` hides)."""
        return tuple(v for v in (self.key, self.user, self.password) if v)


def load_credentials(
    env: Mapping[str, str] | None = None,
    file: str | os.PathLike | None = None,
    repo_root: str | os.PathLike = REPO_ROOT,
) -> Credentials:
    """Credentials from ``file`` (or ``$PROFIT_CREDENTIALS_FILE``), else from ``env``.

    ``env`` defaults to ``os.environ``. Raises ``CredentialsError`` naming what
    is missing or wrong.
    """
    env = os.environ if env is None else env
    if file is None and env.get(ENV_FILE):
        file = env[ENV_FILE]
    if file is not None:
        values = read_file(Path(file), Path(repo_root))
        where = f"credentials file {file}"
    else:
        values = {name: env.get(name, "") for name in VARIABLES}
        where = "the environment"
    missing = [name for name in VARIABLES if not values.get(name)]
    if missing:
        hint = "" if file is not None else f" (or set {ENV_FILE} to a KEY=value file outside the repository)"
        raise CredentialsError(f"ProfitDLL credentials incomplete: {', '.join(missing)} not set in {where}{hint}")
    return Credentials(key=values[ENV_KEY], user=values[ENV_USER], password=values[ENV_PASSWORD])


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def inside(path: Path, root: Path) -> bool:
    try:
        return path.is_relative_to(root)
    except ValueError:
        return False


def read_file(path: Path, repo_root: Path, names: Iterable[str] = VARIABLES) -> dict[str, str]:
    """The ``NAME=value`` pairs named in ``names`` of a credentials file that lies outside
    ``repo_root`` (the one parser of such files: the login here, the routing password and the
    host's token in the order service)."""
    given = Path(os.path.abspath(path))
    root = Path(os.path.abspath(repo_root))
    root_real = root.resolve()
    if inside(given, root) or inside(given, root_real) or inside(given.resolve(), root_real):
        raise CredentialsError(
            f"refusing credentials file {path}: it lies inside the repository {root}; "
            "keep it outside (e.g. ~/.config/quantumtrader/profit.env) so it can never be committed"
        )
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CredentialsError(f"credentials file {path} not found") from None
    except OSError as e:
        raise CredentialsError(f"credentials file {path} cannot be read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"credentials file {path} is not a regular file")
    if os.name == "posix" and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("credentials file %s is accessible by group/others (mode %o); run: chmod 600 %s",
                    path, stat.S_IMODE(st.st_mode), path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Windows editors add a BOM
    except UnicodeDecodeError:
        raise CredentialsError(f"credentials file {path} is not UTF-8 text") from None
    except OSError as e:
        raise CredentialsError(f"credentials file {path} cannot be read: {e.strerror}") from None
    values: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            # The line may be a bare secret: say where it is, not what it is.
            raise CredentialsError(f"credentials file {path} line {lineno}: expected NAME=value")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if name in names:
            values[name] = value
        # Other names are ignored: the file may be shared with other settings.
    return values


# -- redaction ---------------------------------------------------------------


def redact(text: str, credentials: Credentials | Iterable[str] | None) -> str:
    """``text`` with every credential value replaced by ``***``.

    Longer values are replaced first so a value that contains another is
    hidden whole. Errs on the side of hiding: a short password also masks its
    other occurrences in the text.
    """
    if credentials is None:
        return text
    values = credentials.values() if isinstance(credentials, Credentials) else tuple(v for v in credentials if v)
    for value in sorted(set(values), key=len, reverse=True):
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Scrubs credential values from a log record (message, args, exception and stack text).

    The record's message is rendered (``msg % args``), redacted, and stored
    back with ``args`` cleared, so no handler can re-render the raw args. Attach
    it to **handlers** (a filter on a logger does not see records propagated
    from child loggers); ``install_log_redaction`` does that for the root
    logger's handlers.
    """

    def __init__(self, credentials: Credentials | Iterable[str]):
        super().__init__()
        self._values = credentials.values() if isinstance(credentials, Credentials) else tuple(v for v in credentials if v)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format/args pair: still scrub both parts
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(message, self._values)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self._values)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self._values)
        return True


def install_log_redaction(credentials: Credentials, logger: logging.Logger | None = None) -> RedactingFilter:
    """Attach one ``RedactingFilter`` to every handler of ``logger`` (default: the root logger).

    Call after logging is configured; handlers added later need
    ``handler.addFilter`` with the returned filter.
    """
    filt = RedactingFilter(credentials)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(filt)
    return filt
