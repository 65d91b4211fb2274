"""Scale: the time per item must not grow with the number of items (linear, not quadratic).

At two sizes each (a fresh simulator, daemon and journal per size; the production install,
polling off, socket gateway on, no package manager, so nothing installs):

- **one poll returning N updates**: N updates of a 1 KiB package queued in the simulator;
  ``getreq`` (``GetUpdateRequests``) on the commands socket, timed until its reply lists all
  N; then until the journal (read as ``sota_client status`` reads it) has all N downloaded,
  the downloads being the poll's follow-ups;
- **N undelivered events in the journal**: a journal holding N ``DownloadComplete`` envelopes
  for the socket gateway, written before the daemon starts; the daemon's exec → ``READY=1``
  and RSS then, and the time to deliver them all once an SWLM's events socket appears.

The baseline of each figure is the same figure at the smaller size, in the same run: the
ratio of the times per item is ~1 when the path is linear, ~10 for a tenfold size when it is
quadratic. Run: ``.venv/bin/python -m bench.scale [--quick] [--python PATH]``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sota_client._store import Journal, UpdateState
from sota_client.gateways._events import EventOutbox
from sota_client.sim import CoreSimulator
from swlm_sdk.protocol import DownloadComplete

from ._common import DEVICE, BenchError, Daemon, Row, Section, cpu_seconds, proc_kib, run_main
from ._venv import chosen_python

UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LINEAR = 2.0  # a per-item ratio above this, for a size ten times larger, is not linear
TIMEOUT = 600.0


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--updates", type=_sizes, help="updates in one poll, two sizes (100,1000; quick 20,200)"
    )
    parser.add_argument(
        "--events",
        type=_sizes,
        help="undelivered events, two sizes (1000,10000; quick 200,2000)",
    )
    parser.add_argument("--python", type=Path, help="the venv's interpreter (default: production)")
    return parser


def _sizes(text: str) -> tuple[int, int]:
    small, large = (int(part) for part in text.split(","))
    return small, large


def collect(argv: list[str] | None = None) -> Section:
    args = parser().parse_args(argv)
    updates = args.updates or ((20, 200) if args.quick else (100, 1000))
    events = args.events or ((200, 2000) if args.quick else (1000, 10000))
    python = chosen_python(args.python)
    work = Path(tempfile.mkdtemp(prefix="sota-scale-"))
    try:
        polls = [_poll(python, work / f"poll{n}", n) for n in updates]
        outboxes = [_outbox(python, work / f"events{n}", n) for n in events]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        _row("one poll returning N updates: `getreq` until its reply lists them", updates,
             [p[0] for p in polls], "ms"),
        _row("... then until the journal has all N downloaded (the poll's follow-ups)", updates,
             [p[1] for p in polls], "ms"),
        _row("N undelivered events in the journal: delivery to an SWLM that appears", events,
             [o[2] for o in outboxes], "ms"),
        _row("... exec → `READY=1` with N undelivered events (total ms)", events,
             [o[0] for o in outboxes], "ms", per_item=False),
        _row("... RSS after `READY=1` with N undelivered events (total MiB)", events,
             [o[1] for o in outboxes], "MiB", per_item=False),
    ]  # fmt: skip
    details = [
        "The poll's follow-ups, per update: "
        + "; ".join(
            f"at {n:,}, {total / n:.1f} ms of wall time of which {cpu / n:.1f} ms of the "
            "daemon's CPU"
            for n, (_, total, cpu) in zip(updates, polls, strict=True)
        )
        + " (the rest is off the daemon's CPU: fsyncs, the simulator)."
    ]
    return Section("Scale", "python -m bench.scale", rows, details)


def _row(
    what: str, sizes: tuple[int, int], totals: list[float], unit: str, *, per_item: bool = True
) -> Row:
    """The figure at both sizes, per item (or in total), and the large one / the small one."""
    (small, large), (t_small, t_large) = sizes, totals
    if per_item:
        a, b = t_small / small, t_large / large
        measured = f"{a:.3f} {unit}/item at {small:,}; {b:.3f} at {large:,}"
        ratio = b / a
        # Growing by less than the size ratio's square root is linear enough.
        linear = ratio <= LINEAR
        goal = f"linear: per item at {large:,} ≤ {LINEAR:g}x at {small:,}"
    else:
        measured = f"{t_small:.1f} {unit} at {small:,}; {t_large:.1f} at {large:,}"
        ratio = t_large / t_small
        linear = (t_large - t_small) <= (large / small) * max(t_small, 1e-9)
        goal = "no more than linear growth"
    return Row(what, measured, f"the same at {small:,}", f"{ratio:.2f}x", goal, linear)


def _wait(predicate: Callable[[], bool], what: str, daemon: Daemon) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"{what} did not happen within {TIMEOUT:g} s\n{daemon.log_tail()}")
        daemon.pid  # noqa: B018 -- fails loudly if the daemon died
        time.sleep(0.02)


def _poll(python: Path, work: Path, count: int) -> tuple[float, float, float]:
    """Milliseconds: ``getreq`` listing ``count`` updates; until all are downloaded; the
    daemon's CPU over that time."""
    with CoreSimulator() as sim:
        sim.add_package("tiny", "1.0", data=b"x" * 1024)
        ids = {sim.queue_update(DEVICE, "tiny", "1.0") for _ in range(count)}
        with Daemon(python, work, sim.url, polling=False) as daemon:
            daemon.start()
            start, cpu = time.perf_counter(), cpu_seconds(daemon.pid)
            elapsed, reply = daemon.command("getreq")
            listed = {match.decode() for match in UUID.findall(reply)}
            if not ids <= listed:
                raise BenchError(
                    f"getreq listed {len(ids & listed)} of the {count} updates: {reply[:300]!r}"
                )

            def downloaded() -> bool:
                if not daemon.journal_path.exists():
                    return False
                with Journal.open_read_only(daemon.journal_path) as journal:
                    done = [u for u in journal.updates() if u.state is not UpdateState.DOWNLOADING]
                return len(done) >= count

            _wait(downloaded, f"downloading {count} updates", daemon)
            total = time.perf_counter() - start
            cpu = cpu_seconds(daemon.pid) - cpu
            images = set(p.name for p in daemon.packages_dir.iterdir())
            if not ids <= images:
                raise BenchError(f"{len(ids - images)} of {count} images are not on disk")
    return elapsed * 1000, total * 1000, cpu * 1000


class _Listener:
    """An SWLM's events socket that counts the envelopes it reads."""

    def __init__(self, path: Path) -> None:
        self.received = 0
        self.bad = b""
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen(64)
        self._server.settimeout(0.05)
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            if b"DownloadComplete" in data:
                self.received += 1
            else:
                self.bad = data

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self._server.close()


def _outbox(python: Path, work: Path, count: int) -> tuple[float, float, float]:
    """``count`` undelivered events: exec → READY ms, RSS MiB then, delivery ms."""
    work.mkdir(parents=True)
    with CoreSimulator() as sim:
        daemon = Daemon(python, work, sim.url, polling=False)
        daemon.state_dir.mkdir(mode=0o700)
        with Journal.open(daemon.journal_path) as journal:
            for _ in range(count):
                update_id = str(uuid.uuid4())
                event = DownloadComplete(update_id, f"/var/sota/{update_id}", "")
                entry = EventOutbox.entry_for(event)
                assert entry is not None
                journal.add_event(*entry, update_id=update_id)
            if journal.pending_events("socket") != count:
                raise BenchError(f"the journal holds {journal.pending_events()} events")
        with daemon:
            ready = daemon.start()
            rss = proc_kib(daemon.pid, "VmRSS") / 1024
            start = time.perf_counter()
            listener = _Listener(daemon.events_socket)
            try:
                _wait(lambda: listener.received >= count, f"delivering {count} events", daemon)
                delivered = time.perf_counter() - start
                time.sleep(0.2)
                if listener.bad or listener.received != count:
                    raise BenchError(
                        f"{listener.received} events delivered, not {count}: {listener.bad!r}"
                    )
            finally:
                listener.close()
    return ready * 1000, rss, delivered * 1000


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


if __name__ == "__main__":
    raise SystemExit(main())
