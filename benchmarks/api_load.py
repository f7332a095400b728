"""How many job submissions per second ``pelletseg serve`` holds: wrk on loopback against
``POST /v1/jobs`` (each request inserts a job row and sends a plan message).

    python -m benchmarks.api_load --db sqlite --broker embedded --duration 20 --connections 8

Starts a private stack (a temp home; ``--db postgres`` a private database on
127.0.0.1:5432, dropped after; ``--broker redis`` a private ``redis-server`` on a free port),
an API key, ``pelletseg serve`` (one uvicorn process), then runs ``wrk`` (Debian package
``wrk``) with ``benchmarks/api_submit.lua`` and prints one Markdown table row: requests/s,
latency p50/p99, non-2xx answers, jobs in the table afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

LUA = Path(__file__).with_name("api_submit.lua")
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {seconds} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--broker", choices=["embedded", "redis"], default="embedded")
    parser.add_argument("--duration", type=int, default=20, help="seconds of load")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    home = Path(tempfile.mkdtemp(prefix="pelletseg-load-"))
    env = {**os.environ, "PELLETSEG_HOME": str(home)}
    cleanup = []
    try:
        if args.db == "postgres":
            name = f"pelletseg_load_{uuid.uuid4().hex[:8]}"
            admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))

            def drop(name=name, admin=admin):
                with admin.connect() as conn:
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                      f"WHERE datname = '{name}'"))
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            cleanup.append(drop)
            env["PELLETSEG_DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        if args.broker == "redis":
            port = _free_port()
            redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                                      "--appendonly", "no"], stdout=subprocess.DEVNULL)
            cleanup.append(redis.terminate)
            env["PELLETSEG_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        key = subprocess.run([sys.executable, "-m", "cli", "apikey", "create", "load"],
                             env=env, capture_output=True, text=True, check=True
                             ).stdout.strip().splitlines()[-1]
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cleanup.append(server.terminate)
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/healthz", server)
        httpx.post(f"{base}/v1/jobs", json={"source_url": "s3://bench/warm.tif"},
                   headers={"Authorization": f"Bearer {key}"}).raise_for_status()
        load = subprocess.run(
            ["wrk", "-t", str(args.threads), "-c", str(args.connections),
             "-d", f"{args.duration}s", "--latency", "-s", str(LUA), f"{base}/v1/jobs"],
            env={**env, "PELLETSEG_API_KEY": key}, capture_output=True, text=True, check=True)
        out = load.stdout
        url = env.get("PELLETSEG_DATABASE_URL") or f"sqlite:///{home / 'pelletseg.db'}"
        engine = create_engine(url)
        with engine.connect() as conn:
            jobs = conn.execute(text("SELECT count(*) FROM jobs")).scalar_one()
        engine.dispose()
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)
        p50 = re.search(r"50%\s+(\S+)", out).group(1)
        p99 = re.search(r"99%\s+(\S+)", out).group(1)
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errors = re.search(r"Socket errors: (.*)", out)
        print(out)
        print(f"| {args.db} | {args.broker} | {args.connections} | {rps} | {p50} | {p99} | "
              f"{non2xx.group(1) if non2xx else 0} | {errors.group(1) if errors else 'none'} | "
              f"{jobs} |")
    finally:
        for step in reversed(cleanup):
            try:
                step()
            except Exception as e:
                print(f"cleanup: {e}", file=sys.stderr)
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
