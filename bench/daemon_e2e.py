"""The daemon's download, end to end: throughput and CPU against curl, peak memory per size.

Starts the Core simulator and a real ``sota_client`` (the production install, polling off),
then, each round, downloads the same random image from the simulator with ``curl -s -o file``
and with the daemon's ``StartDownload`` (``dl <id>`` on the commands socket, whose reply comes
once the image is in ``packages_dir``, SHA-256 taken and fsynced). Measured:

- MB/s (10^6 bytes/s) of each, and the ratio daemon / curl per round;
- the same against ``curl -s -o file`` followed by ``fdatasync`` of the file, timed together:
  curl with the daemon's durability (the image on disk, not only in the page cache), whose
  rate is bounded by the disk's write speed as the daemon's is;
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
    try:
        images = {
            "image": (size_mib << 20, write_random(work / "image.bin", size_mib << 20)),
            "big": (big_mib << 20, write_random(work / "big.bin", big_mib << 20)),
        }
        with CoreSimulator(path_roots=(str(work),)) as sim:
            sim.add_package("image", "1.0", path=str(work / "image.bin"))
            sim.add_package("big", "1.0", path=str(work / "big.bin"))
            curl_s, curl_cpu, synced_s, ours_s, ours_cpu = [], [], [], [], []
            with Daemon(python, work / "d1", sim.url, polling=False) as daemon:
                daemon.start()
                for n in range(rounds):
                    size, sha = images["image"]
                    # Turn who goes first, so that none always gets the warmer machine.
                    order = ("curl", "synced", "daemon")
                    for who in order[n % 3 :] + order[: n % 3]:
                        if who == "curl":
                            seconds, cpu = _curl(sim, work, size)
                            curl_s.append(seconds)
                            curl_cpu.append(cpu)
                        elif who == "synced":
                            seconds, _ = _curl(sim, work, size, sync=True)
                            synced_s.append(seconds)
                        else:
                            seconds, cpu = _download(sim, daemon, "image", size, sha, n == 0)
                            ours_s.append(seconds)
                            ours_cpu.append(cpu)
                peak = proc_kib(daemon.pid, "VmHWM") / 1024
            with Daemon(python, work / "d2", sim.url, polling=False) as daemon:
                daemon.start()
                size, sha = images["big"]
                big_s, _ = _download(sim, daemon, "big", size, sha, True)
                big_peak = proc_kib(daemon.pid, "VmHWM") / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb = (size_mib << 20) / 1e6
    ours_rate = [mb / s for s in ours_s]
    curl_rate = [mb / s for s in curl_s]
    rate_ratio = [o / c for o, c in zip(ours_rate, curl_rate, strict=True)]
    synced_rate = [mb / s for s in synced_s]
    synced_ratio = [o / c for o, c in zip(ours_rate, synced_rate, strict=True)]
    cpu_ratio = [o / c for o, c in zip(ours_cpu, curl_cpu, strict=True)]
    rows = [
        Row(
            f"{size_mib} MiB update, simulator → daemon → `packages_dir` (SHA-256, fsync), "
            "vs `curl -s -o`",
            f"{spread(ours_rate, '{:,.0f}')} MB/s",
            f"curl {spread(curl_rate, '{:,.0f}')} MB/s",
            spread(rate_ratio, "{:.2f}x"),
            "≥ 0.8x",
            statistics.median(rate_ratio) >= 0.8,
        ),
        Row(
            "the same download vs `curl -s -o` then `fdatasync` of its file (the same bytes "
            "on disk)",
            f"{spread(ours_rate, '{:,.0f}')} MB/s",
            f"curl + fdatasync {spread(synced_rate, '{:,.0f}')} MB/s",
            spread(synced_ratio, "{:.2f}x"),
            "-",
            None,
        ),
        Row(
            "CPU (user+sys) of that download vs `curl -o` + `openssl dgst -sha256`",
            f"{spread(ours_cpu, '{:.2f}')} s",
            f"{spread(curl_cpu, '{:.2f}')} s",
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
    details = [
        f"{rounds} rounds of {size_mib} MiB; the {big_mib} MiB download ran at "
        f"{(big_mib << 20) / 1e6 / big_s:,.0f} MB/s. Per round (MB/s, CPU s):\n\n"
        "| round | curl MB/s | curl + fdatasync MB/s | daemon MB/s | ratio to curl "
        "| curl + openssl CPU s | daemon CPU s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
        + "\n".join(
            f"| {n + 1} | {c:,.0f} | {s:,.0f} | {o:,.0f} | {r:.2f} | {cc:.2f} | {oc:.2f} |"
            for n, (c, s, o, r, cc, oc) in enumerate(
                zip(curl_rate, synced_rate, ours_rate, rate_ratio, curl_cpu, ours_cpu, strict=True)
            )
        )
    ]
    return Section(
        "Downloads: the daemon against curl", "python -m bench.daemon_e2e", rows, details
    )


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
