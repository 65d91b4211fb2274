"""Words for failed streams: every warning that names why a connection failed uses them."""

from __future__ import annotations

import errno
import os

import anyio
import pytest

from swlm_sdk._wire import stream_failure


def broken_by(cause: BaseException | None) -> anyio.BrokenResourceError:
    """As anyio raises it: ``raise BrokenResourceError from exc``, with no text of its own."""
    error = anyio.BrokenResourceError()
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (anyio.EndOfStream(), "the peer closed the connection"),
        (anyio.ClosedResourceError(), "the connection was already closed"),
        (
            broken_by(ConnectionResetError(errno.ECONNRESET, os.strerror(errno.ECONNRESET))),
            "Connection reset by peer",
        ),
        (broken_by(None), "the connection broke (BrokenResourceError)"),
        (BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE)), "Broken pipe"),
        (OSError("no strerror here"), "no strerror here"),
        (OSError(), "the connection broke (OSError)"),
    ],
)
def test_every_failure_has_words(exc: BaseException, words: str) -> None:
    assert stream_failure(exc) == words
