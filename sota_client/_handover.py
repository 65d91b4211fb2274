"""The ``DownloadComplete`` that hands an update to an SWLM, with the metadata the daemon knows.

Beyond the three 0.1 fields, the event carries the image's ``sha256`` and ``size`` (what the
download computed) and the ``package`` Core named for the update (the journal keeps it from
Core's update list), each only where known. ``device.event_metadata = false`` leaves them all
out, for SWLMs that refuse fields they do not know: the event is then byte for byte 0.1.

Every place that makes the event goes through :func:`named_download_complete` (a fresh
download) or :func:`kept_download_complete` (an update handed over again, from the journal),
both through :func:`download_complete`, so the rule is in one place; :func:`as_configured`
applies the key to an envelope kept from before a change of it.
"""

from __future__ import annotations

from typing import Protocol

from swlm_sdk.protocol import (
    DownloadComplete,
    Package,
    ProtocolError,
    decode_envelope,
    encode_envelope,
)

from ._store import DownloadRecord, DownloadState, UpdateRecord

__all__ = [
    "as_configured",
    "download_complete",
    "kept_download_complete",
    "named_download_complete",
]


class _Journal(Protocol):
    def update(self, update_id: str) -> UpdateRecord | None: ...
    def download(self, update_id: str) -> DownloadRecord | None: ...


def download_complete(
    update_id: str,
    image: str,
    *,
    size: int | None,
    sha256: str | None,
    package: tuple[str, str] | None,
    metadata: bool,
) -> DownloadComplete:
    """The event for ``image``: with what is known of it if ``metadata``, else the 0.1 fields."""
    if not metadata:
        return DownloadComplete(update_id, image, "")
    return DownloadComplete(
        update_id,
        image,
        "",
        sha256=sha256,
        size=size,
        package=None if package is None else Package(*package),
    )


def named_download_complete(
    journal: _Journal,
    update_id: str,
    image: str,
    *,
    size: int | None,
    sha256: str | None,
    metadata: bool,
) -> DownloadComplete:
    """The event for ``image``, with the package Core named for the update (the journal keeps
    it from Core's update list)."""
    record = journal.update(update_id) if metadata else None
    package = None if record is None else record.package
    return download_complete(
        update_id, image, size=size, sha256=sha256, package=package, metadata=metadata
    )


def kept_download_complete(
    journal: _Journal, update_id: str, image: str, *, metadata: bool
) -> DownloadComplete:
    """The event for an update handed over again: the size and SHA-256 the journal recorded
    for its complete download, and the package Core named for it."""
    if not metadata:
        return DownloadComplete(update_id, image, "")
    download = journal.download(update_id)
    size: int | None = None
    sha256: str | None = None
    if download is not None and download.state is DownloadState.COMPLETE and download.sha256:
        size, sha256 = download.size, download.sha256
    return named_download_complete(
        journal, update_id, image, size=size, sha256=sha256, metadata=True
    )


def as_configured(payload: bytes, *, metadata: bool) -> bytes:
    """An envelope from the outbox as the key says it goes out now.

    With ``metadata`` on, and for every envelope without metadata (one a daemon before this
    addition kept, say), the bytes as they are. With it off, a ``DownloadComplete`` kept while
    it was on loses the fields, so that turning the key off helps at once.
    """
    if metadata:
        return payload
    try:
        event = decode_envelope(payload)
    except ProtocolError:
        return payload  # not ours to judge here: delivered as kept
    if isinstance(event, DownloadComplete) and event.has_metadata:
        return encode_envelope(event.without_metadata())
    return payload
