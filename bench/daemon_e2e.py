"""The daemon's download, end to end: throughput and CPU against curl, peak memory per size.

Starts the Core simulator and a real ``sota_client`` (the production install, polling off),
then, each round, downloads the same random image from the simulator with ``curl -s -o file``
and with the daemon's ``StartDownload`` (``dl <id>`` on the commands socket, whose reply comes
once the image is in ``packages_dir``, SHA-256 taken and fsynced). Measured:

- MB/s (10^6 bytes/s) of each, and the ratio daemon / curl per round;
- the same against ``curl -s -o file`` followed by ``fdatasync`` of the file, timed together:
  curl with the daemon's durability (the image on disk, not only in the page cache), whose
  rate is bounded by the disk's write speed as the daemon's is;
- the disk's own durable rate: the same number of bytes written from memory and
  ``fdatasync``-ed, no network; no download that keeps the image through a power cut can be
  faster than that, so the daemon's rate over it says how much of the disk it gets;
- the same rounds with the daemon's ``packages_dir`` and curl's file on tmpfs
  (``/dev/shm``, where ``fdatasync`` costs nothing): the daemon's pipeline against curl with
  the disk out of the way (left out where there is no writable ``/dev/shm``);
- CPU (user + system) of the daemon's download (its process CPU clock before and after)
  against ``curl -o`` plus ``openssl dgst -sha256`` of curl's file (the children's rusage);
- peak RSS (``VmHWM``): a fresh daemon per size (``--size-mib`` and ``--big-mib``), so the
  peak is that size's, the same for both if memory does not grow with the image.

Run: ``.venv/bin/python -m bench.daemon_e2e [--quick] [--python PATH]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from sota_client.sim import CoreSimulator

from ._common import (
    DEVICE,
    BenchError,
    Daemon,
    MiB,
    Row,
    Section,
    cpu_seconds,
    proc_kib,
    require,
    run_main,
    sha256_file,
    spread,
    write_random,
)

PEAK_GOAL_MIB = 48


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small images, 2 rounds")
    parser.add_argument("--size-mib", type=int, help="image size (default 512; quick 32)")
    parser.add_argument("--big-mib", type=int, help="second size for the peak (1024; quick 64)")
    parser.add_argument("--rounds", type=int, help="downloads per client (default 5; quick 2)")
    parser.add_argument("--python", type=Path, help="the venv's interpreter (default: production)")
    return parser


def collect(argv: list[str] | None = None) -> Section:
    args = parser().parse_args(argv)
    size_mib = args.size_mib or (32 if args.quick else 512)
    big_mib = args.big_mib or (64 if args.quick else 1024)
    rounds = args.rounds or (2 if args.quick else 5)
    python = args.python or _production()
    require("curl", "openssl")
    work = Path(tempfile.mkdtemp(prefix="sota-bench-"))
    memory = _tmpfs_dir()
    try:
        images = {
            "image": (size_mib << 20, write_random(work / "image.bin", size_mib << 20)),
            "big": (big_mib << 20, write_random(work / "big.bin", big_mib << 20)),
        }
        size, sha = images["image"]
        with CoreSimulator(path_roots=(str(work),)) as sim:
            sim.add_package("image", "1.0", path=str(work / "image.bin"))
            sim.add_package("big", "1.0", path=str(work / "big.bin"))
            with Daemon(python, work / "d1", sim.url, polling=False) as daemon:
                daemon.start()
                disk = _rounds(sim, daemon, work, size, sha, rounds, durable=True)
                peak = proc_kib(daemon.pid, "VmHWM") / 1024
            on_tmpfs = None
            if memory is not None:
                with Daemon(python, memory / "d3", sim.url, polling=False) as daemon:
                    daemon.start()
                    on_tmpfs = _rounds(sim, daemon, memory, size, sha, rounds, durable=False)
            with Daemon(python, work / "d2", sim.url, polling=False) as daemon:
                daemon.start()
                size, sha = images["big"]
                big_s, _ = _download(sim, daemon, "big", size, sha, True)
                big_peak = proc_kib(daemon.pid, "VmHWM") / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if memory is not None:
            shutil.rmtree(memory, ignore_errors=True)

    mb = (size_mib << 20) / 1e6
    rate = disk.rates(mb)
    ours_rate = rate["daemon"]

    def ratio(of: list[float], to: list[float]) -> list[float]:
        return [a / b for a, b in zip(of, to, strict=True)]

    rate_ratio = ratio(ours_rate, rate["curl"])
    cpu_ratio = ratio(disk.cpu["daemon"], disk.cpu["curl"])
    ours = f"{spread(ours_rate, '{:,.0f}')} MB/s"
    rows = [
        Row(
            f"{size_mib} MiB update, simulator → daemon → `packages_dir` (SHA-256, fsync), "
            "vs `curl -s -o`",
            ours,
            f"curl {spread(rate['curl'], '{:,.0f}')} MB/s",
            spread(rate_ratio, "{:.2f}x"),
            "≥ 0.8x",
            statistics.median(rate_ratio) >= 0.8,
        ),
        Row(
            "the same download vs `curl -s -o` then `fdatasync` of its file (the same bytes "
            "on disk)",
            ours,
            f"curl + fdatasync {spread(rate['synced'], '{:,.0f}')} MB/s",
            spread(ratio(ours_rate, rate["synced"]), "{:.2f}x"),
            "-",
            None,
        ),
        Row(
            "the same download vs the disk's durable rate: as many bytes written from memory, "
            "then `fdatasync`, no network",
            ours,
            f"disk {spread(rate['disk'], '{:,.0f}')} MB/s",
            spread(ratio(ours_rate, rate["disk"]), "{:.2f}x"),
            "-",
            None,
        ),
    ]
    if on_tmpfs is not None:
        tmpfs_rate = on_tmpfs.rates(mb)
        tmpfs_ratio = ratio(tmpfs_rate["daemon"], tmpfs_rate["curl"])
        rows.append(
            Row(
                "the same download with `packages_dir` and curl's file on tmpfs, where "
                "`fdatasync` costs nothing: the pipeline without the disk",
                f"{spread(tmpfs_rate['daemon'], '{:,.0f}')} MB/s",
                f"curl {spread(tmpfs_rate['curl'], '{:,.0f}')} MB/s",
                spread(tmpfs_ratio, "{:.2f}x"),
                "≥ 0.8x",
                statistics.median(tmpfs_ratio) >= 0.8,
            )
        )
    rows += [
        Row(
            "CPU (user+sys) of that download vs `curl -o` + `openssl dgst -sha256`",
            f"{spread(disk.cpu['daemon'], '{:.2f}')} s",
            f"{spread(disk.cpu['curl'], '{:.2f}')} s",
            spread(cpu_ratio, "{:.2f}x"),
            "≤ 1.5x",
            statistics.median(cpu_ratio) <= 1.5,
        ),
        Row(
            f"peak RSS (VmHWM) during a {size_mib} MiB and a {big_mib} MiB download, "
            "a fresh daemon each",
            f"{peak:.1f} and {big_peak:.1f} MiB",
            f"{size_mib} MiB: {peak:.1f} MiB",
            f"{big_peak / peak:.2f}x",
            f"≤ {PEAK_GOAL_MIB} MiB, the same for both",
            max(peak, big_peak) <= PEAK_GOAL_MIB and big_peak / peak <= 1.05,
        ),
    ]
    per_round = zip(
        rate["curl"],
        rate["synced"],
        rate["disk"],
        ours_rate,
        rate_ratio,
        disk.cpu["curl"],
        disk.cpu["daemon"],
        strict=True,
    )
    details = [
        f"{rounds} rounds of {size_mib} MiB; the {big_mib} MiB download ran at "
        f"{(big_mib << 20) / 1e6 / big_s:,.0f} MB/s. Per round (MB/s, CPU s):\n\n"
        "| round | curl MB/s | curl + fdatasync MB/s | disk MB/s | daemon MB/s | ratio to curl "
        "| curl + openssl CPU s | daemon CPU s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(
            f"| {n + 1} | {c:,.0f} | {s:,.0f} | {d:,.0f} | {o:,.0f} | {r:.2f} | {cc:.2f} "
            f"| {oc:.2f} |"
            for n, (c, s, d, o, r, cc, oc) in enumerate(per_round)
        )
    ]
    return Section(
        "Downloads: the daemon against curl", "python -m bench.daemon_e2e", rows, details
    )


class _Rounds:
    """Seconds (and CPU seconds, where taken) of each contender, a list per contender."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def add(self, who: str, seconds: float, cpu: float | None = None) -> None:
        self.seconds.setdefault(who, []).append(seconds)
        if cpu is not None:
            self.cpu.setdefault(who, []).append(cpu)

    def rates(self, mb: float) -> dict[str, list[float]]:
        """MB/s of each contender's rounds, each having moved ``mb`` megabytes."""
        return {who: [mb / s for s in seconds] for who, seconds in self.seconds.items()}


def _rounds(
    sim: CoreSimulator,
    daemon: Daemon,
    out: Path,
    size: int,
    sha: str,
    rounds: int,
    *,
    durable: bool,
) -> _Rounds:
    """``rounds`` downloads each by curl and the daemon (and, when ``durable``, by curl then
    ``fdatasync``, and the disk's own write), files in ``out``; who goes first turns, so that
    none always gets the warmer machine."""
    order = ("curl", "synced", "disk", "daemon") if durable else ("curl", "daemon")
    taken = _Rounds()
    for n in range(rounds):
        turn = n % len(order)
        for who in order[turn:] + order[:turn]:
            if who == "curl":
                taken.add(who, *_curl(sim, out, size))
            elif who == "synced":
                taken.add(who, _curl(sim, out, size, sync=True)[0])
            elif who == "disk":
                taken.add(who, _write_synced(out / "disk.out", size))
            else:
                taken.add(who, *_download(sim, daemon, "image", size, sha, n == 0))
    return taken


def _tmpfs_dir() -> Path | None:
    """A scratch directory on ``/dev/shm`` if it is a writable tmpfs, else None."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        return None
    return Path(tempfile.mkdtemp(prefix="sota-bench-", dir=shm))


def _write_synced(path: Path, size: int) -> float:
    """Seconds to write ``size`` bytes from memory in 4 MiB writes and ``fdatasync`` them."""
    block = os.urandom(4 * MiB)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size
        while left:
            left -= os.write(fd, memoryview(block)[: min(left, len(block))])
        os.fdatasync(fd)
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def _production() -> Path:
    from ._venv import production_python

    return production_python()


def _curl(sim: CoreSimulator, work: Path, size: int, *, sync: bool = False) -> tuple[float, float]:
    """``curl -s -o`` (and, with ``sync``, ``fdatasync`` of its file): its seconds; then the
    CPU of curl and ``openssl dgst -sha256``."""
    request_id = sim.queue_update(DEVICE, "image", "1.0")
    url = f"{sim.url}/api/v1/mydevice/{DEVICE}/updates/{request_id}/download"
    out = work / "curl.out"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["curl", "-sSf", "-o", str(out), url], check=True)
    if sync:
        fd = os.open(out, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - start
    subprocess.run(["openssl", "dgst", "-sha256", str(out)], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.stat().st_size != size:
        raise BenchError(f"curl wrote {out.stat().st_size} bytes, not {size}")
    out.unlink()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def _download(
    sim: CoreSimulator, daemon: Daemon, package: str, size: int, sha: str, check_sha: bool
) -> tuple[float, float]:
    """``dl <id>``: seconds and the daemon's CPU seconds; the image must be whole."""
    request_id = sim.queue_update(DEVICE, package, "1.0")
    cpu = cpu_seconds(daemon.pid)
    elapsed, reply = daemon.command(f"dl {request_id}")
    cpu = cpu_seconds(daemon.pid) - cpu
    if b"DownloadComplete" not in reply:
        raise BenchError(f"dl {request_id} answered {reply[:300]!r}\n{daemon.log_tail()}")
    image = daemon.packages_dir / request_id
    if not image.exists():
        raise BenchError(f"DownloadComplete, but there is no {image}")
    if image.stat().st_size != size:
        raise BenchError(f"the daemon wrote {image.stat().st_size} bytes, not {size}")
    if check_sha and sha256_file(image) != sha:
        raise BenchError(f"{image} does not have the SHA-256 of the image served")
    image.unlink()
    return elapsed, cpu


def main(argv: list[str] | None = None) -> int:
    return run_main(collect, argv)


if __name__ == "__main__":
    raise SystemExit(main())
