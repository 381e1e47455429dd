"""The benchmark script still runs: its smallest throughput run yields every condition in its JSON.

Not a performance test (no figure is checked against a target): it only keeps bench/nginx_bench.py from
rotting as the code it drives changes. Needs nginx, wrk and bpftrace besides the real kernel.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "nginx_bench.py"


def test_bench_throughput_smoke(tmp_path):
    missing = [t for t in ("nginx", "wrk", "bpftrace", "taskset") if not shutil.which(t)]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make setup installs them)")
    sys.path.insert(0, str(BENCH.parent))
    try:
        import nginx_bench
    finally:
        sys.path.remove(str(BENCH.parent))
    r = subprocess.run(
        [sys.executable, str(BENCH), "--only", "throughput", "--seconds", "1", "--rounds", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((tmp_path / "throughput.json").read_text())
    rows = {row["condition"]: row for row in data["rows"]}
    assert set(rows) == set(nginx_bench.CONDITIONS)
    for cond, row in rows.items():
        assert row["rps"] > 0 and row["completed"] > 0 and row["served"] >= row["completed"], (cond, row)
        assert row["nginx_cpu_us_per_req"] > 0, (cond, row)
    for cond in ("hdrlog", "hdrlog-entry", "hdrlog-paced", "hdrlog-apart"):
        row = rows[cond]
        assert row["captured_requests"] > 0 and row["consumer_cpu_us_per_msg"] > 0, (cond, row)
        assert row["lost_events"] is not None, (cond, row)
    for cond in ("bpftrace", "sites-count"):
        assert rows[cond]["probe_hits_per_req"] >= 1, (cond, rows[cond])
    assert data["placement"] and any(line.startswith("probe ") for line in data["placement"])
    everything = json.loads((tmp_path / "nginx_bench.json").read_text())
    assert everything["throughput"]["rows"] == data["rows"]
    assert "loadavg_before" in everything and "loadavg_after" in everything
    assert "== throughput" in r.stdout
