"""Removes each rule the code keeps, once, and checks that a test fails (``make mutants``).

Every entry names a rule, the exact text that implements it, what it becomes without the rule,
and the tests that must catch that. The file is restored after each run, whatever happens.
A mutant that no test kills means an untested rule: the run fails and names it.

Usage: ``python tools/mutants.py [NAME_SUBSTRING ...]``
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    # -- the journal: one transaction, one state machine --------------------------------------
    Mutant(
        "a state change and its event in one transaction",
        "sota_client/_store.py",
        """            self._enter(db, update_id, UpdateState.DOWNLOADED)
            if event is not None:
                self._add_event(db, event[0], event[1], update_id)""",
        """            self._enter(db, update_id, UpdateState.DOWNLOADED)
        if event is not None:
            self.add_event(event[0], event[1], update_id)""",
        ("tests/sota_client/test_store.py",),
    ),
    Mutant(
        "a report Core accepted is answered from the journal",
        "sota_client/_store.py",
        "if record is not None and record.state is UpdateState.REPORTED:",
        "if False:",
        ("tests/sota_client/test_reports.py", "tests/sota_client/test_store.py"),
    ),
    Mutant(
        "a delivered DownloadComplete makes the update DELIVERED",
        "sota_client/_store.py",
        "                    self._enter(db, row[1], UpdateState.DELIVERED, holder=holder)",
        "                    pass",
        ("tests/sota_client/test_store.py",),
    ),
    # -- reports: exactly once -----------------------------------------------------------------
    Mutant(
        "a POST in doubt is checked against Core's list first",
        "sota_client/_reports.py",
        "        if pending.in_doubt and self._ask_core:",
        "        if False:",
        ("tests/sota_client/test_reports.py",),
    ),
    Mutant(
        "a report is marked in doubt before its POST",
        "sota_client/_reports.py",
        "        self._journal.report_sending(update_id)\n",
        "",
        ("tests/sota_client/test_reports.py",),
    ),
    Mutant(
        "only a permanent 4xx from the report endpoint sets a report aside",
        "sota_client/_reports.py",
        "and exc.status not in _RETRYABLE_4XX",
        "",
        ("tests/sota_client/test_reports.py",),
    ),
    Mutant(
        "the auth server's failures are TokenError, never Core's refusal",
        "sota_client/_backend.py",
        "            raise TokenError(str(exc), cause=exc) from exc",
        "            raise",
        ("tests/sota_client/test_reports.py",),
    ),
    Mutant(
        "a report hitting the same bug three times is set aside",
        "sota_client/_reports.py",
        """        if self._strikes.strike(pending.update_id, str(exc)):""",
        """        if False:""",
        ("tests/sota_client/test_reports.py",),
    ),
    Mutant(
        "one send of an update's report at a time",
        "sota_client/_reports.py",
        """                state = self._journal.update_state(update_id)
                if state is UpdateState.REPORTED:""",
        """                state = None
                if state is UpdateState.REPORTED:""",
        ("tests/sota_client/test_reports.py",),
    ),
    Mutant(
        "a refused connection is not in doubt",
        "sota_client/_http1.py",
        "        with self.errors(method, url, sent=False, reading=False):",
        "        with self.errors(method, url, sent=True, reading=False):",
        ("tests/sota_client/test_reports.py", "tests/sota_client/test_http1.py"),
    ),
    # -- the interpreter -----------------------------------------------------------------------
    Mutant(
        "install progress needs neither Core nor a token",
        "sota_client/_interpreter.py",
        """        if isinstance(command, SendInstallProgress):  # local: neither Core nor a token
            return take_install_progress(self._s.journal, command)
""",
        "",
        ("tests/sota_client/test_install_progress.py",),
    ),
    Mutant(
        "install progress is taken only while the update is being installed",
        "sota_client/_install_progress.py",
        "    if record.state not in PROGRESS_STATES:",
        "    if False:",
        ("tests/sota_client/test_install_progress.py",),
    ),
    Mutant(
        "install progress is journaled at 10 % steps",
        "sota_client/_install_progress.py",
        "    if _due(record.install, progress.percent) and journal.install_progress(",
        "    if journal.install_progress(",
        ("tests/sota_client/test_install_progress.py",),
    ),
    Mutant(
        "install progress that comes before the delivery is recorded is kept",
        "sota_client/_store.py",
        "_KEEPS_PROGRESS = \"updates.state = 'downloaded' AND excluded.state = 'delivered'\"",
        '_KEEPS_PROGRESS = "0"',
        ("tests/sota_client/test_install_progress.py",),
    ),
    Mutant(
        "an update installed for the next boot leaves the report deadline behind",
        "sota_client/_store.py",
        "            self._enter(db, update_id, UpdateState.AWAITING_REBOOT)",
        "            self._enter(db, update_id, UpdateState.DELIVERED)",
        ("tests/sota_client/test_report_timeout.py", "tests/sota_client/test_install_progress.py"),
    ),
    Mutant(
        "reboot needed needs neither Core nor a token",
        "sota_client/_interpreter.py",
        """        if isinstance(command, SendRebootNeeded):  # local too
            return take_reboot_needed(self._s.journal, command)
""",
        "",
        ("tests/sota_client/test_install_progress.py",),
    ),
    # -- reboot, confirm, rollback: the App ---------------------------------------------------
    Mutant(
        "reboot: a restart in the same boot counts no boot",
        "swlm_sdk/_app.py",
        "            if entry.boot_id != self._boot_id:",
        "            if True:",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: the on_boot hook is asked once a boot",
        "swlm_sdk/_app.py",
        "            if not entry.checked:",
        "            if True:",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: an update unconfirmed for confirm_boots boots is rolled back",
        "swlm_sdk/_app.py",
        "            overdue = entry.boots > self.confirm_boots and not manual",
        "            overdue = False",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: not confirmed nor asked before the first reboot",
        "swlm_sdk/_app.py",
        "        if entry.boots == 0:",
        "        if False:",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: a success from the rollback hook is reported a failure",
        "swlm_sdk/_app.py",
        "            code = ResultCode.INSTALL_FAILED",
        "            pass",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: the daemon is told until it takes SendRebootNeeded",
        "swlm_sdk/_app.py",
        "            if not entry.announced and not await self._announce(update_id, entry):",
        "            if False:",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: a 2016 daemon is sent SendRebootNeeded once",
        "swlm_sdk/_app.py",
        "                    self._announce_refused = True",
        "                    pass",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: without a boot id an install that needs a reboot fails",
        "swlm_sdk/_app.py",
        """        if self._boot_id is None:
            log.error(
                "update %s is installed and needs a reboot""",
        """        if False:
            log.error(
                "update %s is installed and needs a reboot""",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: an interrupted install is rolled back",
        "swlm_sdk/_app.py",
        "            if self._on_rollback is not None:  # undo what the install may have done",
        "            if False:",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "reboot: an entry awaiting a reboot has its boot id",
        "swlm_sdk/_journal.py",
        """        if entry.state == "awaiting_reboot" and not entry.boot_id:""",
        "        if False:",
        ("tests/swlm_sdk/test_journal.py",),
    ),
    Mutant(
        "control: the control socket is private",
        "swlm_sdk/_control.py",
        "async def control_server(path: str, confirm: Confirm, *, mode: int = 0o600)",
        "async def control_server(path: str, confirm: Confirm, *, mode: int = 0o666)",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    Mutant(
        "control: a request with unknown fields is refused",
        "swlm_sdk/_control.py",
        "class _Request(msgspec.Struct, forbid_unknown_fields=True):",
        "class _Request(msgspec.Struct):",
        ("tests/swlm_sdk/test_app_reboot.py",),
    ),
    # -- reboot, confirm, rollback: swlm_flash ----------------------------------------------
    Mutant(
        "flash: the bootloader falls back after max tries",
        "examples/swlm_flash/swlm_flash.py",
        """            if trial["tries"] < trial["max_tries"]:""",
        "            if True:",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "flash: the bootloader counts a boot once",
        "examples/swlm_flash/swlm_flash.py",
        """        if state["boot_id"] == boot_id:
            return state""",
        "",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "flash: one trial at a time",
        "examples/swlm_flash/swlm_flash.py",
        """        if trial is not None and trial["status"] == "trying":
            return (""",
        """        if False:
            return (""",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "flash: nothing is flashed while a rolled-back slot runs",
        "examples/swlm_flash/swlm_flash.py",
        """        if state["booted"] != state["active"]:""",
        "        if False:",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "flash: the new slot is checked after its boot",
        "examples/swlm_flash/swlm_flash.py",
        "        problem = self.healthy(state, slot)",
        "        problem = None",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "flash: the boot state is locked for each change",
        "examples/swlm_flash/swlm_flash.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))",
        "pass",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "flash: by hand, a slot waits for its confirm",
        "examples/swlm_flash/swlm_flash.py",
        """        if state["booted"] != slot or (self.confirm_by_hand and not pending.manual):""",
        """        if state["booted"] != slot:""",
        ("tests/examples/test_swlm_flash.py",),
    ),
    Mutant(
        "after a 2016 daemon's bad command, the App sends no more progress",
        "swlm_sdk/_app.py",
        "                self.progress_taken = False",
        "                pass",
        ("tests/swlm_sdk/test_progress.py",),
    ),
    Mutant(
        "a failing progress is one warning an install",
        "swlm_sdk/_app.py",
        "        if update_id not in self._progress_warned:  # once an install",
        "        if True:",
        ("tests/swlm_sdk/test_progress.py",),
    ),
    Mutant(
        "progress is throttled: the newest wins between two sends",
        "swlm_sdk/_progress.py",
        """            with anyio.move_on_after(self._interval):
                await self._ended.wait()""",
        "            pass",
        ("tests/swlm_sdk/test_progress.py",),
    ),
    Mutant(
        "the per-update lock: a download and an install never overlap",
        "sota_client/_interpreter.py",
        "            async with self._holding(update_id), self._install_lock:",
        "            async with self._install_lock:",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "an update being downloaded or installed is left alone (_busy)",
        "sota_client/_interpreter.py",
        """        if self._busy(update_id):
            return
        check_update_id(update_id)""",
        """        check_update_id(update_id)""",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "ids in commands pass the one id rule",
        "sota_client/_interpreter.py",
        "            check_update_id(update_id)  # it becomes a file name and a URL path segment",
        "            pass",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "ids in Core's list pass the one id rule",
        "sota_client/_interpreter.py",
        "            if problem is None:\n                usable.append(request)",
        "            if True:\n                usable.append(request)",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "Core's list is taken at most MAX_UPDATES_PER_POLL at a time",
        "sota_client/_interpreter.py",
        "        if len(usable) > MAX_UPDATES_PER_POLL:",
        "        if False:",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "downloads wait their turn",
        "sota_client/_interpreter.py",
        "        self._turns = Turns(services.max_concurrent_downloads)",
        "        self._turns = Turns(1000)",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "turns are served in ticket (installPos) order",
        "sota_client/_turns.py",
        "            while not (self._free and next(iter(self._waiting)) == ticket):",
        "            while not self._free:",
        ("tests/sota_client/test_turns.py", "tests/sota_client/test_lifecycle.py"),
    ),
    Mutant(
        "a complete image is handed over again without a download",
        "sota_client/_interpreter.py",
        """            again = await self._hand_over_again(update_id, image)
            if again is not None:
                return again""",
        "",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "an image is handed over again only if its SHA-256 still matches",
        "sota_client/_download.py",
        "        return have == size and digest.hexdigest() == sha256",
        "        return have == size",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "an interrupted install runs again",
        "sota_client/_interpreter.py",
        "                await self._run(StartInstall(update_id))\n            case UpdateState.R",
        "                pass\n            case UpdateState.R",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "a download over for good leaves no partial file",
        "sota_client/_interpreter.py",
        "                remove_partial(image)  # over for good: nothing will resume it",
        "                pass",
        ("tests/sota_client/test_lifecycle.py",),
    ),
    Mutant(
        "the daemon takes every unfinished update forward at start-up",
        "sota_client/_daemon.py",
        "    interpreter.recover()\n",
        "",
        (
            "tests/e2e/test_service.py::test_a_restart_finishes_what_a_kill_left_even_without_polling",
        ),
    ),
    # -- socket paths: a stale socket is replaced, nothing else ---------------------------------
    Mutant(
        "a socket a process listens on is never replaced",
        "swlm_sdk/_socket_file.py",
        "        probe.connect(path)\n",
        "        raise ConnectionRefusedError(errno.ECONNREFUSED, 'mutant')\n",
        (
            "tests/sota_client/test_socket_gateway.py::test_a_live_listener_is_left_alone",
            "tests/swlm_sdk/test_listener.py",
        ),
    ),
    Mutant(
        "only a socket is ever replaced, never a file or a link",
        "swlm_sdk/_socket_file.py",
        "    if not stat.S_ISSOCK(info.st_mode):",
        "    if False:",
        (
            "tests/sota_client/test_socket_gateway.py::test_a_regular_file_is_left_alone",
            "tests/swlm_sdk/test_listener.py",
        ),
    ),
    Mutant(
        "a broken stream is reported with its cause, not anyio's empty text",
        "swlm_sdk/_wire.py",
        "    cause = exc.__cause__ if isinstance(exc, anyio.BrokenResourceError) else exc\n",
        "    cause = exc\n",
        (
            "tests/swlm_sdk/test_wire.py",
            "tests/sota_client/test_dbus_connection.py::"
            "test_a_bus_that_hangs_up_during_authentication_says_how",
        ),
    ),
    # -- the events outbox ---------------------------------------------------------------------
    Mutant(
        "an SWLM that restarted gets again what it has not reported",
        "sota_client/gateways/_events.py",
        "                self._notice_restarted_listener()\n",
        "",
        ("tests/sota_client/test_events_gateway.py",),
    ),
    Mutant(
        "an event hitting the same bug three times is set aside",
        "sota_client/gateways/_events.py",
        "                    if self._strikes.strike(item.id, repr(exc)):",
        "                    if False:",
        ("tests/sota_client/test_events_gateway.py",),
    ),
    # -- update metadata in DownloadComplete --------------------------------------------------
    Mutant(
        "device.event_metadata = false sends DownloadComplete with the 0.1 fields only",
        "sota_client/_handover.py",
        """    if not metadata:
        return DownloadComplete(update_id, image, "")
    return DownloadComplete(""",
        """    return DownloadComplete(""",
        ("tests/sota_client/test_event_metadata.py",),
    ),
    Mutant(
        "with event_metadata off, an envelope kept with the fields goes out without them",
        "sota_client/_handover.py",
        "    if isinstance(event, DownloadComplete) and event.has_metadata:",
        "    if False:",
        ("tests/sota_client/test_event_metadata.py", "tests/sota_client/test_events_gateway.py"),
    ),
    Mutant(
        "an update handed over again carries the size and SHA-256 the journal recorded",
        "sota_client/_handover.py",
        "        size, sha256 = download.size, download.sha256",
        "        pass",
        ("tests/sota_client/test_events_gateway.py", "tests/sota_client/test_event_metadata.py"),
    ),
    Mutant(
        "the App checks the image's SHA-256 before the install handler",
        "swlm_sdk/_image.py",
        "    if found != event.sha256.lower():",
        "    if False:",
        ("tests/swlm_sdk/test_app_image_check.py",),
    ),
    Mutant(
        "the App checks the image's size before its SHA-256",
        "swlm_sdk/_image.py",
        "        if event.size is not None and info.st_size != event.size:",
        "        if False:",
        ("tests/swlm_sdk/test_app_image_check.py",),
    ),
    # -- loops and polling ---------------------------------------------------------------------
    Mutant(
        "the report loop is supervised",
        "sota_client/_daemon.py",
        'tg.start_soon(supervise, "report", functools.partial(reports.run, interpreter.publish))',
        "tg.start_soon(reports.run, interpreter.publish)",
        ("tests/sota_client/test_daemon.py",),
    ),
    Mutant(
        "the event delivery loop is supervised",
        "sota_client/_daemon.py",
        'supervise, "event delivery", functools.partial(outbox.run, interpreter.publish)',
        "functools.partial(outbox.run, interpreter.publish)",
        ("tests/sota_client/test_daemon.py",),
    ),
    Mutant(
        "the polling loop is supervised",
        "sota_client/_daemon.py",
        '        tg.start_soon(supervise, "polling", poller.run)',
        "        tg.start_soon(poller.run)",
        ("tests/sota_client/test_daemon.py",),
    ),
    Mutant(
        "the poller waits for idle before its interval",
        "sota_client/_poller.py",
        """        while True:
            await activity.wait_idle()
            delay = self.wait()""",
        """        while True:
            delay = self.wait()""",
        ("tests/sota_client/test_poller.py",),
    ),
    Mutant(
        "the poller waits for idle again before it polls",
        "sota_client/_poller.py",
        """            await self._sleep(delay)
            await activity.wait_idle()""",
        """            await self._sleep(delay)""",
        ("tests/sota_client/test_poller.py",),
    ),
    Mutant(
        "failed polls back off",
        "sota_client/_poller.py",
        "        return self._backoff.delay(self.failures) if self.failures else self.interval",
        "        return self.interval",
        ("tests/sota_client/test_poller.py",),
    ),
    Mutant(
        "polling_sec = 0 means the shortest interval",
        "sota_client/_poller.py",
        "        self.interval = max(float(seconds), MIN_INTERVAL)",
        "        self.interval = float(seconds)",
        ("tests/sota_client/test_poller.py",),
    ),
    # -- the Core client's boundary ------------------------------------------------------------
    Mutant(
        "nothing but a SotaError leaves the backend",
        "sota_client/_backend.py",
        """    except SotaError:
        raise
    except Exception as exc:
        logger.exception("Unexpected error in CoreBackend.%s", call)""",
        """    except SotaError:
        raise
    except ZeroDivisionError as exc:
        logger.exception("Unexpected error in CoreBackend.%s", call)""",
        ("tests/sota_client/test_backend.py",),
    ),
    Mutant(
        "a token must be a bearer token",
        "sota_client/_backend.py",
        "            _check_token(token)\n",
        "",
        ("tests/sota_client/test_backend.py",),
    ),
    Mutant(
        "the token backoff is waited out before a token request",
        "sota_client/_backend.py",
        """            if delay > 0:
                await self._backoff.sleep(delay)""",
        """            if delay > 1e9:
                await self._backoff.sleep(delay)""",
        ("tests/sota_client/test_backend.py", "tests/sota_client/test_interpreter.py"),
    ),
    Mutant(
        "TLS is verified against the CA bundle",
        "sota_client/_backend.py",
        "        return ssl.create_default_context(cafile=ca_file)",
        "        return ssl._create_unverified_context(cafile=ca_file)",
        ("tests/sota_client/test_tls.py",),
    ),
    # -- the HTTP client and the download pipeline ----------------------------------------------
    Mutant(
        "body bytes a worker thread got before a failure are handed out first",
        "sota_client/_http1.py",
        '                    return count, TimeoutError(f"no data within {self.timeout:g} s")',
        '                    raise TimeoutError(f"no data within {self.timeout:g} s")',
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a TLS read that must write first waits for the socket to be writable",
        "sota_client/_http1.py",
        "                writing = isinstance(exc, ssl.SSLWantWriteError)",
        "                writing = False",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a worker thread waiting for body bytes leaves when its task is cancelled",
        "sota_client/_http1.py",
        "                    anyio.from_thread.check_cancelled()",
        "                    pass",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a kept connection the server closed is not used again",
        "sota_client/_http1.py",
        "and connection.looks_alive():",
        ":",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a connection idle longer than keepalive is not used again",
        "sota_client/_http1.py",
        "            if now - connection.idle_since <= self.keepalive and",
        "            if True and",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "only a body read to its end leaves the connection reusable",
        "sota_client/_http1.py",
        "        if self._done and self._reusable:",
        "        if self._reusable:",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "Connection: close is honoured",
        "sota_client/_http1.py",
        """        self._reusable = head.http_version == b"1.1" and not _has_token(
            self.header("Connection"), "close"
        )""",
        '        self._reusable = head.http_version == b"1.1"',
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a request that may have been acted on is not sent again",
        "sota_client/_http1.py",
        "                if method not in _IDEMPOTENT:",
        "                if False:",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "an idempotent request on a lost kept connection goes out again",
        "sota_client/_http1.py",
        "                if method not in _IDEMPOTENT:",
        "                if True:",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "the idle connections are bounded",
        "sota_client/_http1.py",
        "        while len(self._idle) > self.MAX_IDLE:",
        "        while len(self._idle) > 1000:",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a chunk larger than the caller's buffer is kept for the next read",
        "sota_client/_http1.py",
        "                self._buffered = bytes(event.data[count:])",
        "                pass",
        ("tests/sota_client/test_http1.py",),
    ),
    Mutant(
        "a download's next batch waits for the one being written",
        "sota_client/_download.py",
        """        await self.wait()
        file = self._job.file""",
        """        file = self._job.file""",
        ("tests/sota_client/test_download.py",),
    ),
    Mutant(
        "a checkpoint's batch is synced before the checkpoint is taken",
        "sota_client/_download.py",
        "        synced = at_due and self._job.options.checkpoint is not None",
        "        synced = False",
        ("tests/sota_client/test_download.py",),
    ),
    Mutant(
        "the open-file limit is raised for many socket peers",
        "sota_client/_daemon.py",
        "        raise_open_file_limit()  # every peer of the commands socket holds a descriptor\n",
        "",
        ("tests/e2e/test_service.py::test_the_daemon_raises_its_open_file_limit_for_many_peers",),
    ),
    # -- no silent failure (operability) -------------------------------------------------------
    Mutant(
        "an overdue report is queued only if the update still waits, since the same time",
        "sota_client/_store.py",
        """            if record.since != since:
                return False""",
        "",
        ("tests/sota_client/test_report_timeout.py",),
    ),
    Mutant(
        "an overdue report never replaces a report that came",
        "sota_client/_store.py",
        "            if record is None or record.state is not UpdateState.DELIVERED:",
        "            if record is None:",
        ("tests/sota_client/test_report_timeout.py",),
    ),
    Mutant(
        "the report timeout credits at most the whole timeout, never a negative wait",
        "sota_client/_report_timeout.py",
        "waited = min(max(wall - record.since, 0.0), self.seconds)",
        "waited = wall - record.since",
        ("tests/sota_client/test_report_timeout.py",),
    ),
    Mutant(
        "the report timeout measures waits on the monotonic clock",
        "sota_client/_report_timeout.py",
        "            if self._deadlines[key] <= now:",
        "            if record.since + self.seconds <= wall:",
        ("tests/sota_client/test_report_timeout.py",),
    ),
    Mutant(
        "a journal with no write-ahead log is read immutable (no -shm left behind)",
        "sota_client/_store.py",
        'flags = "mode=ro" if os.path.exists(f"{path}-wal") else "mode=ro&immutable=1"',
        'flags = "mode=ro"',
        ("tests/sota_client/test_status.py",),
    ),
    Mutant(
        "the status reads a journal only",
        "sota_client/_store.py",
        'flags = "mode=ro" if os.path.exists(f"{path}-wal") else "mode=ro&immutable=1"',
        'flags = "mode=rw"',
        ("tests/sota_client/test_status.py",),
    ),
    Mutant(
        "the same failure again is not logged at WARN again",
        "sota_client/_interpreter.py",
        "level = logging.DEBUG if self._failing.get(key) == text else logging.WARNING",
        "level = logging.WARNING",
        ("tests/sota_client/test_logging.py",),
    ),
    Mutant(
        "Core's unchanged update list is not logged at INFO again",
        "sota_client/_interpreter.py",
        "level = logging.DEBUG if listed == self._listed else logging.INFO",
        "level = logging.INFO",
        ("tests/sota_client/test_logging.py",),
    ),
    Mutant(
        "the backoff message is logged when the wait begins",
        "sota_client/_poller.py",
        """            delay = self.wait()
            self._log_failure(delay)
            await self._sleep(delay)
            await activity.wait_idle()
            await self.poll()""",
        """            delay = self.wait()
            await self._sleep(delay)
            await activity.wait_idle()
            await self.poll()
            self._log_failure(self.wait())""",
        ("tests/sota_client/test_logging.py",),
    ),
    Mutant(
        "a start-up error is not followed by Stopped",
        "sota_client/_daemon.py",
        """        _systemd.notify("STOPPING=1")
    logger.info("Stopped")""",
        """        _systemd.notify("STOPPING=1")
        logger.info("Stopped")""",
        ("tests/sota_client/test_logging.py",),
    ),
    # -- the local API: HTTP and websocket gateways -------------------------------------------
    Mutant(
        "a websocket handshake from a foreign web page is refused",
        "sota_client/gateways/_websocket.py",
        "    if not origin_allowed(request, allowed_origins):",
        "    if False:",
        ("tests/sota_client/test_websocket_gateway.py",),
    ),
    Mutant(
        "an HTTP request from a foreign web page is refused",
        "sota_client/gateways/_http.py",
        "        if not origin_allowed(request, origins):",
        "        if False:",
        ("tests/sota_client/test_http_gateway.py",),
    ),
    Mutant(
        "an HTTP request naming a foreign host is refused (DNS rebinding)",
        "sota_client/gateways/_http.py",
        "        if not host_allowed(request, origins):",
        "        if False:",
        ("tests/sota_client/test_http_gateway.py",),
    ),
    Mutant(
        "an HTTP command needs Content-Type: application/json",
        "sota_client/gateways/_http.py",
        "        if not _is_json(content_type):",
        "        if False:",
        ("tests/sota_client/test_http_gateway.py",),
    ),
    Mutant(
        "DownloadProgress at most about once a second per download",
        "sota_client/gateways/_broadcast.py",
        "        if last is not None and now - last < PROGRESS_INTERVAL and not final:",
        "        if False:",
        ("tests/sota_client/test_broadcast.py",),
    ),
    Mutant(
        "out of descriptors, the accept loop has the gateway close a connection",
        "sota_client/gateways/_accept.py",
        """            if code in _OUT_OF_DESCRIPTORS:
                await make_room()""",
        "",
        (
            "tests/sota_client/test_local_http.py::"
            "test_out_of_descriptors_the_oldest_idle_connection_makes_room",
            "tests/sota_client/test_socket_gateway.py",
        ),
    ),
    # -- the D-Bus gateway: the GENIVI SWLM's round trip -------------------------------------
    Mutant(
        "D-Bus: the SWLM gets one update at a time",
        "sota_client/gateways/_dbus.py",
        """            held = self.outstanding()
            if held is not None:
                self._note_waiting(held)""",
        """            held = self.outstanding()
            if False:
                self._note_waiting(held)""",
        ("tests/sota_client/test_dbus_gateway.py",),
    ),
    Mutant(
        "D-Bus: a report under the manifest id is the update handed over",
        "sota_client/gateways/_dbus.py",
        "        return self._handing if held is None else held.update_id",
        "        return None",
        ("tests/sota_client/test_dbus_gateway.py",),
    ),
    Mutant(
        "D-Bus: an operation id that is not a UUID becomes the update id",
        "sota_client/gateways/_dbus.py",
        "r if _is_uuid(r.id) else msgspec.structs.replace(r, id=update_id)",
        "r",
        ("tests/sota_client/test_dbus_gateway.py",),
    ),
    Mutant(
        "D-Bus: an SWLM that appears gets what waits for it at once",
        "sota_client/gateways/_dbus.py",
        "            self._swlm_appeared = True  # what waits for it goes now",
        "            pass  #",
        ("tests/sota_client/test_dbus_gateway.py",),
    ),
    Mutant(
        "D-Bus: handed over again when its report may be lost",
        "sota_client/gateways/_dbus.py",
        "        if not restarted and not name_was_held:\n            return",
        "        return",
        ("tests/sota_client/test_dbus_gateway.py",),
    ),
    Mutant(
        "D-Bus: handed over again when the daemon had to wait for its name",
        "sota_client/gateways/_dbus.py",
        "            self._name_was_held = True\n",
        "",
        ("tests/e2e/test_dbus_swlm.py",),
    ),
    Mutant(
        "D-Bus: a report's result_code must be there",
        "sota_client/gateways/_dbus_args.py",
        '    if "result_code" not in entries:',
        "    if False:",
        ("tests/sota_client/test_dbus_args.py", "tests/sota_client/test_dbus_gateway.py"),
    ),
    Mutant(
        "D-Bus: the reply says the journal has the report",
        "sota_client/gateways/_dbus.py",
        "        if self._holds(update_id, encode_report(report)):",
        "        if True:",
        ("tests/sota_client/test_dbus_gateway.py",),
    ),
    Mutant(
        "events kept for a gateway turned off go to those turned on",
        "sota_client/_daemon.py",
        "    moved = journal.route_events()",
        "    moved = 0",
        ("tests/e2e/test_dbus_swlm.py",),
    ),
    Mutant(
        "each SWLM gateway delivers only its own copy of an event",
        "sota_client/_store.py",
        'FROM outbox WHERE set_aside IS NULL AND channel = ?"\n',
        'FROM outbox WHERE set_aside IS NULL AND ? IS NOT NULL"\n',
        ("tests/sota_client/test_store.py",),
    ),
    # -- the RVI gateway ---------------------------------------------------------------------
    Mutant(
        "RVI: the image must match the SHA-1 of /sota/start",
        "sota_client/gateways/_rvi_transfers.py",
        "            if digest != transfer.checksum:",
        "            if False:",
        ("tests/sota_client/test_rvi_transfers.py", "tests/sota_client/test_rvi_gateway.py"),
    ),
    Mutant(
        "RVI: chunks are joined in numeric order",
        "sota_client/gateways/_rvi_transfers.py",
        "        for index in sorted(sizes):",
        "        for index in sorted(sizes, key=str):",
        ("tests/sota_client/test_rvi_transfers.py",),
    ),
    Mutant(
        "RVI: the edge takes no request from a web page",
        "sota_client/gateways/_rvi.py",
        "        if not host_allowed(request, origins) or not origin_allowed(request, ()):",
        "        if False:",
        ("tests/sota_client/test_rvi_gateway.py",),
    ),
    Mutant(
        "RVI: a node's refusal is never Core's refusal of a report",
        "sota_client/gateways/_rvi.py",
        "        except (RviReplyError, BackendError) as exc:",
        "        except RviReplyError as exc:",
        ("tests/sota_client/test_rvi_gateway.py",),
    ),
    Mutant(
        "RVI: a download with no chunk for the idle timeout fails",
        "sota_client/gateways/_rvi.py",
        "                if remaining <= 0:",
        "                if remaining <= -3600:",
        ("tests/sota_client/test_rvi_gateway.py",),
    ),
    Mutant(
        "RVI: a report in doubt is sent again without asking Core",
        "sota_client/_reports.py",
        "        if pending.in_doubt and self._ask_core:",
        "        if pending.in_doubt:",
        ("tests/sota_client/test_reports.py",),
    ),
]


def run(mutant: Mutant) -> tuple[bool, str]:
    """Apply the mutant, run its tests, restore the file; (killed, what killed it)."""
    path = REPO / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return False, f"the text to mutate occurs {original.count(mutant.old)} times"
    mutated = original.replace(mutant.old, mutant.new)
    if path.suffix == ".py":
        try:
            compile(mutated, str(path), "exec")
        except SyntaxError as exc:  # a test that cannot import proves nothing about the rule
            return False, f"the mutant does not compile (the code moved?): {exc}"
    try:
        path.write_text(mutated)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=3600,
        )
    finally:
        path.write_text(original)
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    if result.returncode == 0:
        return False, "no test failed"
    return True, (failed[0].removeprefix("FAILED ") if failed else result.stdout[-300:].strip())


def main(argv: list[str]) -> int:
    chosen = [m for m in MUTANTS if not argv[1:] or any(a in m.name for a in argv[1:])]
    survivors = 0
    for mutant in chosen:
        started = time.monotonic()
        killed, why = run(mutant)
        survivors += not killed
        mark = "killed " if killed else "SURVIVED"
        print(f"{mark} {mutant.name} ({time.monotonic() - started:.0f} s): {why}", flush=True)
    print(f"{len(chosen) - survivors} of {len(chosen)} mutants killed")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
