"""The secrets-in-logs scanner (tests/plugins/secrets_scan.py) catches what it must, and only that."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from plugins.secrets_scan import TEST_SECRETS, SecretsScan, find_secrets

from stratus.observability import log_context, logger

# Built at run time, so no source line of this file is itself an API key.
PLANTED_KEY = "strk_" + "0123456789ab" + "_" + "Zq9" * 8


def test_find_secrets_sees_registered_keys_and_api_key_shapes() -> None:
    # given a line with a registered provider key, one with an API key, and a clean one
    # when they are searched / then each secret is found where it is, nothing where it is not
    assert find_secrets(f"Bearer {TEST_SECRETS[0]} rejected") == [TEST_SECRETS[0]]
    assert find_secrets(f'{{"key": "{PLANTED_KEY}"}}') == [PLANTED_KEY]
    assert find_secrets("strk_0123456789ab (a key id only) and sk-… redacted") == []


def test_a_planted_secret_in_a_log_record_fails_the_session() -> None:
    # given a scanner listening on a private logger (not the suite's own scan: it must not fail this run)
    scan = SecretsScan(secrets=("sk-planted-" + "x" * 12,))
    private = logging.getLogger("secrets-scan-selftest")
    private.propagate = False
    private.setLevel(logging.INFO)
    handler = scan.handler()
    private.addHandler(handler)
    try:
        # when one clean line and one line carrying each kind of secret in its extras are logged
        private.info("nothing to see")
        private.warning("provider refused", extra={"auth": "Bearer sk-planted-" + "x" * 12})
        private.info("key created", extra={"key": PLANTED_KEY})
    finally:
        private.removeHandler(handler)

    # then two leaks are recorded, masked in the report, and the session's exit status becomes failed
    assert len(scan.leaks) == 2
    report = "\n".join(scan.summary())
    assert "2 line(s)" in report
    assert PLANTED_KEY not in report
    assert "sk-planted-" + "x" * 12 not in report
    session = SimpleNamespace(exitstatus=pytest.ExitCode.OK)
    scan.finish(session)
    assert session.exitstatus == pytest.ExitCode.TESTS_FAILED


def test_keys_in_the_powertools_log_context_are_scanned() -> None:
    # given a scanner fed the Powertools formatter's output of Stratus' logger
    scan = SecretsScan(secrets=("sk-context-" + "y" * 12,))
    handler = scan.handler()
    private = logging.getLogger("stratus.selftest")
    private.propagate = False
    private.addHandler(handler)
    try:
        # when a secret sits only in the appended context keys (not in the message or extras)
        with log_context(request_id="sk-context-" + "y" * 12):
            record = private.makeRecord("stratus.selftest", logging.INFO, __file__, 1, "hello", (), None)
            handler.handle(record)
    finally:
        private.removeHandler(handler)

    # then it is found (the scanner formats Stratus records as the Powertools logger does)
    assert len(scan.leaks) == 1
    assert logger.thread_safe_get_current_keys().get("request_id") != "sk-context-" + "y" * 12


def test_a_clean_session_keeps_its_exit_status() -> None:
    # given a scanner that saw only clean text
    scan = SecretsScan()
    scan.scan("stdout", "INFO document indexed doc_id=abc")
    session = SimpleNamespace(exitstatus=pytest.ExitCode.OK)

    # when the session ends / then nothing is reported and the status is untouched
    scan.finish(session)
    assert scan.summary() == []
    assert session.exitstatus == pytest.ExitCode.OK
