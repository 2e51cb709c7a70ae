"""Short CLI runs over photos on a real S3 endpoint (moto's server on loopback), one after another:
how many end with a status other than 0, and how (issue 27; the exit that CI saw once).

Each run is ``batch-classify run`` over ``--limit`` photos of the bucket, with Prefect's DEBUG log (as
``tests/integration/test_cli.py::test_no_secret_reaches_outputs_or_logs`` runs it). A failed run's
output and Ray's logs are kept under ``--workdir``. With ``--strace``, each run goes under
``strace -f -k -e trace=exit_group`` and a failed run keeps that too: the stack of whatever ended
the process.

Usage (from the project root, beside ../shared)::

    .venv/bin/python -m benchmarks.s3_run_loop --runs 40 --workdir /tmp/bc-s3-loop

Prints one line per run (index, exit status, seconds) and the count of failed runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import SHARED

STRACE = ["strace", "-f", "--seccomp-bpf", "-k", "-e", "trace=exit_group", "-o"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--photos", type=int, default=40, help="photos put in the bucket")
    parser.add_argument("--limit", type=int, default=16, help="photos each run classifies")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bc-s3-loop"))
    parser.add_argument("--strace", action="store_true")
    args = parser.parse_args()

    import boto3
    from moto.server import ThreadedMotoServer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.net import FAKE_AWS, free_port

    args.workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(FAKE_AWS)
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="data")
    for photo in sorted(SHARED.glob("*.JPEG"))[: args.photos]:
        s3.upload_file(str(photo), "data", f"in/{photo.name.split('_')[0]}/{photo.name}")
    cli = Path(sys.executable).parent / "batch-classify"
    failed = 0
    try:
        for k in range(args.runs):
            work = Path(tempfile.mkdtemp(prefix="run", dir=args.workdir))
            ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
            env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "RAY_TMPDIR": ray_tmp, "PREFECT_HOME": str(work / "prefect"),
                   "PREFECT_API_URL": "", "PREFECT_LOGGING_LEVEL": "DEBUG", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
            prefix = [*STRACE, str(work / "strace.out")] if args.strace else []
            started = time.monotonic()
            r = subprocess.run([*prefix, str(cli), "run", "--input", "s3://data/in", "--output", str(work / "out"),
                                "--model", "efficientnet_lite0", "--run-id", "loop", "--limit", str(args.limit), "--num-cpus", "2"],
                               capture_output=True, text=True, timeout=600, env=env)
            print(k, r.returncode, round(time.monotonic() - started, 1), flush=True)
            if r.returncode:
                failed += 1
                (work / "output.txt").write_text(r.stdout + "\n----\n" + r.stderr)
                shutil.copytree(ray_tmp, work / "ray", dirs_exist_ok=True, ignore_dangling_symlinks=True)
            else:
                shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    finally:
        server.stop()
    print(f"{failed} of {args.runs} runs failed")


if __name__ == "__main__":
    main()
