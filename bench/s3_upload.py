"""Initial upload to an S3 endpoint (moto server on loopback, in its own process): opsflow's S3
transport against `rclone copy`, on the same data in the same run.

    .venv/bin/python -m bench.s3_upload [--small 1000] [--large 2] [--large-mib 64]

Small files: 1,000 x 4 KiB in 20 folders; large files: 2 x 64 MiB (multipart for both tools).
Each tool copies into a fresh prefix, the copy is checked (key count and sizes), then removed.
Figures: files/s for small files, MB/s (10^6 bytes) for large files, and opsflow's ratio to
rclone's; the tools take turns for `--rounds` rounds and each figure is the median. moto is a
Python server, so both figures are mostly moto's: read the ratio, not the absolute numbers.
The client's own CPU time per small file (this process for opsflow, the child for rclone) is
printed too: it is what the tool costs where the server is not the bottleneck.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.initial_sync import files_under, make_data, timed  # noqa: E402
from opsflow.transports.base import Upload  # noqa: E402
from opsflow.transports.s3 import S3Transport  # noqa: E402
from tests.support.servers import free_port, wait_for_port  # noqa: E402

BUCKET = "bench"
KEY_ID = SECRET = "testing"


class Bench:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                                   aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        self.client.create_bucket(Bucket=BUCKET)

    def check_and_clear(self, prefix: str, source: Path, files: list[Path]) -> None:
        sizes = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=prefix + "/"):
            sizes.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        for path in files:
            key = f"{prefix}/{path.relative_to(source).as_posix()}"
            if sizes.get(key) != path.stat().st_size:
                raise SystemExit(f"copy check failed: {key} missing or of the wrong size")
        keys = list(sizes)
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=BUCKET, Delete={
                "Objects": [{"Key": k} for k in keys[start:start + 1000]], "Quiet": True})

    def opsflow(self, source: Path, files: list[Path], prefix: str) -> None:
        uploads = []
        for path in files:
            info = path.stat()
            uploads.append(Upload(path, path.relative_to(source).as_posix(), info.st_size,
                                  info.st_mtime))
        transport = S3Transport(self.client, BUCKET, prefix)
        failed = [r for r in transport.send(uploads) if not r.ok]
        if failed:
            raise SystemExit(f"opsflow: {len(failed)} uploads failed, first: {failed[0].error}")

    def rclone(self, source: Path, files: list[Path], prefix: str) -> None:
        listing = Path(tempfile.mkdtemp()) / "files.txt"
        listing.write_text("".join(p.relative_to(source).as_posix() + "\n" for p in files))
        env = dict(os.environ, RCLONE_CONFIG_BENCH_TYPE="s3", RCLONE_CONFIG_BENCH_PROVIDER="Other",
                   RCLONE_CONFIG_BENCH_ENDPOINT=self.url, RCLONE_CONFIG_BENCH_REGION="us-east-1",
                   RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=KEY_ID,
                   RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET)
        env.pop("AWS_CA_BUNDLE", None)  # rclone refuses a custom CA bundle on plain HTTP
        subprocess.run(["rclone", "copy", "--config", "/dev/null", "--s3-no-check-bucket",
                        "--files-from-raw", str(listing), str(source), f"bench:{BUCKET}/{prefix}"],
                       check=True, env=env)
        shutil.rmtree(listing.parent)


def cpu_seconds() -> float:
    """User and system CPU of this process and its finished children (rclone)."""
    own, children = (resource.getrusage(resource.RUSAGE_SELF),
                     resource.getrusage(resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--folders", type=int, default=20)
    parser.add_argument("--large", type=int, default=2)
    parser.add_argument("--large-mib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="opsflow-bench-s3-"))
    port = free_port()
    # its own process, so that the server does not share the bench's interpreter lock
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        data = work / "data"
        print(f"making data: {args.small} x 4 KiB in {args.folders} folders, "
              f"{args.large} x {args.large_mib} MiB ...", flush=True)
        make_data(data, args.small, args.folders, args.large, args.large_mib)
        bench = Bench(f"http://127.0.0.1:{port}")
        tools: dict[str, Callable[[Path, list[Path], str], None]] = {
            "opsflow": bench.opsflow, "rclone": bench.rclone}
        small_files, large_files = files_under(data / "small"), files_under(data / "large")
        large_bytes = sum(p.stat().st_size for p in large_files)
        rates: dict[str, list[float]] = {name: [] for name in tools}
        speeds: dict[str, list[float]] = {name: [] for name in tools}
        cpu_ms: dict[str, list[float]] = {name: [] for name in tools}
        for round_number in range(1, args.rounds + 1):
            print(f"round {round_number} of {args.rounds}", flush=True)
            for name, run in tools.items():
                for kind, files, figures in (("small", small_files, rates),
                                             ("large", large_files, speeds)):
                    if not files:
                        continue
                    prefix = f"{name}-{kind}"
                    cpu_before = cpu_seconds()
                    seconds = timed(lambda r=run, f=files, k=kind, p=prefix: r(data / k, f, p))
                    if kind == "small":
                        cpu_ms[name].append(1000 * (cpu_seconds() - cpu_before) / len(files))
                    bench.check_and_clear(prefix, data / kind, files)
                    figure = (len(files) if kind == "small" else large_bytes / 1e6) / seconds
                    figures[name].append(figure)
                    unit = "files/s" if kind == "small" else "MB/s"
                    print(f"  {name:8} {kind}: {seconds:.2f} s = {figure:,.1f} {unit}",
                          flush=True)
        print("\nmedians:")
        for name in tools:
            line = f"  {name:8}"
            if rates[name]:
                line += (f" small {statistics.median(rates[name]):8,.1f} files/s "
                         f"({statistics.median(cpu_ms[name]):.2f} ms CPU a file)")
            if speeds[name]:
                line += f"   large {statistics.median(speeds[name]):8,.1f} MB/s"
            print(line)
        if rates["rclone"] and rates["opsflow"]:
            print(f"  opsflow/rclone small: "
                  f"{statistics.median(rates['opsflow']) / statistics.median(rates['rclone']):.2f}")
        if speeds["rclone"] and speeds["opsflow"]:
            print(f"  opsflow/rclone large: "
                  f"{statistics.median(speeds['opsflow']) / statistics.median(speeds['rclone']):.2f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
