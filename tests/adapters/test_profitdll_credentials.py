"""Credentials loading and redaction (pipelines/adapters/profitdll/credentials.py).

Secret values are distinctive strings; every check that something is hidden
searches the produced text (repr, exception message, formatted log line) for
each of them.
"""

from __future__ import annotations

import io
import logging
import os

import pytest

from pipelines.adapters.profitdll.credentials import (
    REPO_ROOT,
    Credentials,
    CredentialsError,
    RedactingFilter,
    install_log_redaction,
    load_credentials,
    redact,
)

KEY, USER, PASSWORD = "K3y-Act1v4t10n-9f2c", "trader.login@example", "p@ss=w0rd;#\"x"
ENV = {"PROFIT_KEY": KEY, "PROFIT_USER": USER, "PROFIT_PASSWORD": PASSWORD}
SECRETS = (KEY, USER, PASSWORD)


def assert_no_secret(text: str) -> None:
    for value in SECRETS:
        assert value not in text, f"secret leaked into: {text!r}"


def write_file(path, text: str, mode: int = 0o600):
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


# -- loading -------------------------------------------------------------------


def test_from_environment():
    creds = load_credentials(env=dict(ENV))
    assert (creds.key, creds.user, creds.password) == (KEY, USER, PASSWORD)
    with pytest.raises(AttributeError):  # frozen
        creds.password = "x"


def test_missing_variables_are_named_and_values_are_not_shown():
    with pytest.raises(CredentialsError) as err:
        load_credentials(env={"PROFIT_KEY": KEY, "PROFIT_PASSWORD": ""})
    msg = str(err.value)
    assert "PROFIT_USER" in msg and "PROFIT_PASSWORD" in msg  # empty counts as missing
    assert "PROFIT_KEY" not in msg.split("not set")[0]  # only the missing ones are listed
    assert_no_secret(msg + repr(err.value))
    with pytest.raises(CredentialsError, match="PROFIT_KEY, PROFIT_USER, PROFIT_PASSWORD"):
        load_credentials(env={})


def test_from_file_outside_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    outside = tmp_path / "secrets"
    outside.mkdir()
    path = write_file(outside / "profit.env", (
        "# ProfitDLL login\n"
        "\n"
        f"export PROFIT_KEY={KEY}\n"
        f"PROFIT_USER = '{USER}'\n"
        f"PROFIT_PASSWORD={PASSWORD}\n"  # '=', ';', '#' and '"' inside the value stay
        "OTHER_SETTING=ignored\n"
    ))
    creds = load_credentials(env={}, file=path, repo_root=repo)
    assert (creds.key, creds.user, creds.password) == (KEY, USER, PASSWORD)
    # The file is the only source: variables in the environment are not mixed in.
    partial = write_file(outside / "partial.env", f"PROFIT_KEY={KEY}\n")
    with pytest.raises(CredentialsError) as err:
        load_credentials(env=dict(ENV), file=partial, repo_root=repo)
    assert "PROFIT_USER" in str(err.value) and "PROFIT_PASSWORD" in str(err.value)
    assert_no_secret(str(err.value))
    # PROFIT_CREDENTIALS_FILE names the file when no argument does.
    creds = load_credentials(env={"PROFIT_CREDENTIALS_FILE": str(path)}, repo_root=repo)
    assert creds.password == PASSWORD


def test_file_inside_repo_is_refused(tmp_path):
    repo = tmp_path / "repo"
    (repo / "config").mkdir(parents=True)
    inside = write_file(repo / "config" / "profit.env", "".join(f"{k}={v}\n" for k, v in ENV.items()))
    with pytest.raises(CredentialsError, match="inside the repository") as err:
        load_credentials(env={}, file=inside, repo_root=repo)
    assert_no_secret(str(err.value))
    # A link outside the repo pointing into it is refused too (checked on the target).
    link = tmp_path / "link.env"
    link.symlink_to(inside)
    with pytest.raises(CredentialsError, match="inside the repository"):
        load_credentials(env={}, file=link, repo_root=repo)
    # And a link inside pointing out (the committed path would be the link).
    outside = write_file(tmp_path / "real.env", "".join(f"{k}={v}\n" for k, v in ENV.items()))
    (repo / "link.env").symlink_to(outside)
    with pytest.raises(CredentialsError, match="inside the repository"):
        load_credentials(env={}, file=repo / "link.env", repo_root=repo)
    # The default repo root is this repository: refused before the file is even looked at.
    with pytest.raises(CredentialsError, match="inside the repository"):
        load_credentials(env={}, file=REPO_ROOT / "config" / "no-such-profit.env")


def test_file_problems_name_the_file_and_line_not_values(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    with pytest.raises(CredentialsError, match="not found"):
        load_credentials(env={}, file=tmp_path / "absent.env", repo_root=repo)
    bare = write_file(tmp_path / "bare.env", f"PROFIT_KEY={KEY}\n{PASSWORD}\n")  # a bare secret on line 2
    with pytest.raises(CredentialsError, match="line 2: expected NAME=value") as err:
        load_credentials(env={}, file=bare, repo_root=repo)
    assert_no_secret(str(err.value))
    with pytest.raises(CredentialsError, match="not a regular file"):
        load_credentials(env={}, file=tmp_path, repo_root=repo)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_group_readable_file_warns(tmp_path, caplog):
    repo = tmp_path / "repo"
    repo.mkdir()
    body = "".join(f"{k}={v}\n" for k, v in ENV.items())
    private = write_file(tmp_path / "private.env", body, 0o600)
    shared = write_file(tmp_path / "shared.env", body, 0o644)
    with caplog.at_level(logging.WARNING, logger="quantumtrader.credentials"):
        load_credentials(env={}, file=private, repo_root=repo)
        assert not caplog.records
        creds = load_credentials(env={}, file=shared, repo_root=repo)
    assert creds.password == PASSWORD  # accepted, with a warning
    assert len(caplog.records) == 1 and "chmod 600" in caplog.records[0].getMessage()
    assert_no_secret(caplog.text)


# -- never shown -------------------------------------------------------------------


def test_repr_and_str_show_only_which_fields_are_set():
    creds = Credentials(KEY, USER, PASSWORD)
    expected = "Credentials(key=<set>, user=<set>, password=<set>)"
    assert repr(creds) == str(creds) == f"{creds}" == expected
    assert repr(Credentials(KEY, "", PASSWORD)) == "Credentials(key=<set>, user=<empty>, password=<set>)"
    assert_no_secret(repr([creds, {"c": creds}]))


def test_redact_replaces_every_value():
    creds = Credentials("abc", "abcdef", PASSWORD)
    text = f"user=abcdef key=abc pw={PASSWORD} again {PASSWORD}"
    # The longer value is hidden whole, not as '***def'.
    assert redact(text, creds) == "user=*** key=*** pw=*** again ***"
    assert redact("nothing here", creds) == "nothing here"
    assert redact(text, None) == text


def _logger_with_stream(name: str) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream, handler


def test_filter_scrubs_message_and_args_of_a_record():
    creds = Credentials(KEY, USER, PASSWORD)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"login {USER} with %s and %r", (PASSWORD, {"k": KEY}), None)
    assert RedactingFilter(creds).filter(record) is True  # scrubs, never drops
    assert record.getMessage() == "login *** with *** and {'k': '***'}"
    assert record.args is None


def test_filter_on_handler_scrubs_every_log_line_including_tracebacks():
    creds = Credentials(KEY, USER, PASSWORD)
    parent, stream, handler = _logger_with_stream("qt-test-creds")
    handler.addFilter(RedactingFilter(creds))
    child = logging.getLogger("qt-test-creds.child")  # propagates to the parent's handler
    parent.info("key=%s user=%s", KEY, USER)
    child.warning(f"password is {PASSWORD}")
    try:
        raise RuntimeError(f"DLLInitializeLogin failed for {USER}/{PASSWORD}")
    except RuntimeError:
        child.exception("login failed")
    parent.info("stack", stack_info=True, extra={})
    out = stream.getvalue()
    assert_no_secret(out)
    assert "key=*** user=***" in out and "password is ***" in out
    assert "RuntimeError: DLLInitializeLogin failed for ***/***" in out


def test_install_log_redaction_covers_existing_handlers():
    creds = Credentials(KEY, USER, PASSWORD)
    logger, stream, _ = _logger_with_stream("qt-test-creds-install")
    filt = install_log_redaction(creds, logger)
    logger.error("%s", creds.password)
    assert stream.getvalue().strip().endswith("***")
    assert_no_secret(stream.getvalue())
    assert isinstance(filt, RedactingFilter)


def test_no_value_in_any_exception_text(tmp_path):
    """Every failure path, rendered the way a traceback would render it."""
    import traceback

    repo = tmp_path / "repo"
    repo.mkdir()
    cases = [
        lambda: load_credentials(env={"PROFIT_KEY": KEY, "PROFIT_USER": USER}),
        lambda: load_credentials(env={}, file=write_file(tmp_path / "a.env", f"{KEY}\n"), repo_root=repo),
        lambda: load_credentials(env={}, file=write_file(repo / "b.env", f"PROFIT_KEY={KEY}\n"), repo_root=repo),
        lambda: load_credentials(env={}, file=write_file(tmp_path / "c.env", f"PROFIT_USER={USER}\n"), repo_root=repo),
    ]
    for case in cases:
        with pytest.raises(CredentialsError) as err:
            case()
        assert_no_secret("".join(traceback.format_exception(err.value)))
