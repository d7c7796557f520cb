"""drt-core (a generic reverse-ETL tool) pushing the same rows to the same loopback endpoints as our sync.

The rows are exactly what our adapters sent in the measured sync (captured by the sandboxes): Customer.io batch
ops and manual-segment ids, Meta audience rows, Google audience members, TikTok mapping rows, Pinterest records. drt reads them from Parquet with its
DuckDB source and posts them with its REST destination in batch mode (its fastest mode), with the same per-request
row limits, no rate limit, and the envelope each API needs rendered by its Jinja batch template. drt-core lives in
its own virtualenv under bench/.cache so it never touches the project's dependencies.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

DRT_PACKAGE = "drt-core[duckdb]==1.2.1"
_SUMMARY = re.compile(r"Summary:.*?([0-9.]+)s total")
_ROWS = "{% for r in rows %}{{ r.op }}{% if not loop.last %},{% endif %}{% endfor %}"


def ensure_drt(venv: Path, log=print) -> tuple[Path | None, str | None]:
    """The drt executable, installing drt-core into `venv` on first use; (None, why) when that fails."""
    drt = venv / "bin" / "drt"
    if drt.exists():
        return drt, None
    log(f"installing {DRT_PACKAGE} into {venv}")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300
        )
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", DRT_PACKAGE],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        return None, f"pip install {DRT_PACKAGE} failed: {' | '.join(tail)}"
    except (subprocess.TimeoutExpired, OSError) as exc:
        return None, f"pip install {DRT_PACKAGE} failed: {exc}"
    return (drt, None) if drt.exists() else (None, f"{DRT_PACKAGE} installed no drt executable")


def _families(bodies: dict[str, list[dict]], urls: dict[str, str]) -> list[dict]:
    """Group the captured requests into (endpoint, envelope) families; each family's rows are what drt pushes."""
    from bench.destinations import limit
    from retention_pipeline.destinations.customerio.adapter import (
        CUSTOMERIO_BATCH_BYTES,
        CUSTOMERIO_SEGMENT_IDS,
    )

    families: dict[tuple, dict] = {}

    def family(key: tuple, **spec) -> dict:
        return families.setdefault(key, {"rows": [], **spec})

    for request in bodies.get("customerio", []):
        body = json.loads(request["body"])
        url = f"{urls['customerio']}{request['path']}" + (f"?{request['query']}" if request["query"] else "")
        if request["path"].endswith("/api/v2/batch"):
            spec = family(("customerio", "batch"), destination="customerio", url=url, method="POST", auth="basic",
                          template='{"batch":[' + _ROWS + "]}", limit_bytes=CUSTOMERIO_BATCH_BYTES)  # fmt: skip
            spec["rows"] += [
                json.dumps(op, separators=(",", ":"), ensure_ascii=False) for op in body["batch"]
            ]
        else:
            spec = family(("customerio", url), destination="customerio", url=url, method="POST", auth="basic",
                          template='{"ids":[' + _ROWS + "]}", limit=CUSTOMERIO_SEGMENT_IDS)  # fmt: skip
            spec["rows"] += [json.dumps(i) for i in body["ids"]]
    for request in bodies.get("meta", []):
        body = json.loads(request["body"])
        url = f"{urls['meta']}{request['path']}"
        spec = family(("meta", request["method"], url), destination="meta", url=url, method=request["method"],
                      auth="bearer", schema=body["payload"]["schema"], limit=limit("meta"))  # fmt: skip
        spec["rows"] += [json.dumps(row) for row in body["payload"]["data"]]
    for request in bodies.get("google", []):
        body = json.loads(request["body"])
        members = body.pop("audienceMembers")
        url = f"{urls['google']}{request['path']}"
        envelope = json.dumps(body, separators=(",", ":"))
        spec = family(("google", url, envelope), destination="google", url=url, method="POST", auth="bearer",
                      template="{% raw %}" + envelope[:-1] + ',"audienceMembers":[{% endraw %}' + _ROWS + "]}",
                      limit=limit("google"))  # fmt: skip
        spec["rows"] += [json.dumps(m, separators=(",", ":")) for m in members]
    for request in bodies.get("tiktok", []):
        body = json.loads(request["body"])
        rows = body.pop("batch_data")
        url = f"{urls['tiktok']}{request['path']}"
        envelope = json.dumps(body, separators=(",", ":"))
        spec = family(("tiktok", url, envelope), destination="tiktok", url=url, method="POST", auth="tiktok",
                      template="{% raw %}" + envelope[:-1] + ',"batch_data":[{% endraw %}' + _ROWS + "]}",
                      limit=limit("tiktok"))  # fmt: skip
        spec["rows"] += [json.dumps(r, separators=(",", ":")) for r in rows]
    for request in bodies.get("pinterest", []):
        body = json.loads(request["body"])
        url = f"{urls['pinterest']}{request['path']}"
        operation = body["operation_type"]
        spec = family(("pinterest", url, operation), destination="pinterest", url=url, method=request["method"],
                      auth="bearer", template='{"operation_type":"' + operation + '","records":"' + _ROWS + '"}',
                      limit=limit("pinterest"))  # fmt: skip
        spec["rows"] += body["records"].split(",")
    out = []
    for spec in families.values():
        if "limit_bytes" in spec:  # drt batches by row count: as many ops as always fit in the byte limit
            widest = max(len(r.encode()) for r in spec["rows"]) + 1
            spec["limit"] = max(1, (spec.pop("limit_bytes") - len('{"batch":[]}')) // widest)
        if spec["destination"] == "meta":
            session = 7_000_000_000 + len(out)
            spec["template"] = (
                '{"payload":{"schema":' + json.dumps(spec.pop("schema")) + ',"data":[' + _ROWS + "]},"
                '"session":{"session_id":' + str(session) + ',"batch_seq":{{ rows[0].seq }},'
                '"last_batch_flag":{{ rows[-1].last }},"estimated_num_total":' + str(len(spec["rows"])) + "}}"
            )
        out.append(spec)
    return out


def _write_project(root: Path, families: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    (root / "syncs").mkdir(parents=True, exist_ok=True)
    (root / "home" / ".drt").mkdir(parents=True, exist_ok=True)
    (root / "drt_project.yml").write_text(
        yaml.safe_dump({"name": "bench", "version": "0.1", "profile": "bench"})
    )
    (root / "home" / ".drt" / "profiles.yml").write_text(
        yaml.safe_dump({"bench": {"type": "duckdb", "database": ":memory:"}})
    )
    for number, spec in enumerate(families):
        rows, limit = spec["rows"], spec["limit"]
        chunks = -(-len(rows) // limit)
        table = pa.table(
            {
                "n": list(range(len(rows))),
                "op": rows,
                "seq": [i // limit + 1 for i in range(len(rows))],
                "last": ["true" if i // limit + 1 == chunks else "false" for i in range(len(rows))],
            }
        )
        data = root / f"rows-{number:03d}.parquet"
        pq.write_table(table, data)
        auth = {"type": "bearer", "token": "bench"}
        headers = {"Content-Type": "application/json"}
        if spec["auth"] == "tiktok":  # TikTok's token is the Access-Token header, not Authorization
            auth = None
            headers["Access-Token"] = "bench"
        elif spec["auth"] == "basic":
            auth = {
                "type": "basic",
                "username_env": "BENCH_BASIC_USER",
                "password_env": "BENCH_BASIC_PASSWORD",
            }
        sync = {
            "name": f"push_{number:03d}_{spec['destination']}",
            "model": f"SELECT op, seq, last FROM read_parquet('{data}') ORDER BY n",
            "destination": {
                "type": "rest_api",
                "url": spec["url"],
                "method": spec["method"],
                "headers": headers,
                **({"auth": auth} if auth else {}),
                "body_mode": "batch",
                "batch_template": spec["template"],
                "max_records_per_request": limit,
            },
            "sync": {
                "mode": "full",
                "batch_size": limit,
                "rate_limit": {"requests_per_second": 1_000_000},
                "on_error": "fail",
            },  # fmt: skip
        }
        (root / "syncs" / f"push_{number:03d}.yml").write_text(
            yaml.safe_dump(sync, sort_keys=False, width=10_000)
        )


def compare(drt: Path, bodies: dict[str, list[dict]], urls: dict[str, str], root: Path, sandboxes) -> dict:
    """Push the captured rows with drt; what it sent, how long it took, and whether the sandboxes accepted it."""
    families = _families(bodies, urls)
    _write_project(root, families)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DRT_", "VIRTUAL_ENV"))},
        "HOME": str(root / "home"),
        "BENCH_BASIC_USER": "bench",
        "BENCH_BASIC_PASSWORD": "bench",
        "NO_COLOR": "1",
    }
    started = time.perf_counter()
    version = subprocess.run([str(drt), "--version"], capture_output=True, text=True, env=env, cwd=root)
    startup = time.perf_counter() - started
    before = {name: sandboxes.count(name) for name in urls}
    started = time.perf_counter()
    run = subprocess.run([str(drt), "run"], capture_output=True, text=True, env=env, cwd=root, timeout=3600)
    seconds = time.perf_counter() - started
    received = {name: sandboxes.log(name, before[name], sandboxes.count(name)) for name in urls}
    requests = {name: len(log) for name, log in received.items()}
    rejected = sum(1 for log in received.values() for r in log if r[4] >= 300)
    rows = {name: sum(len(f["rows"]) for f in families if f["destination"] == name) for name in urls}
    summary = _SUMMARY.search(run.stdout + run.stderr)
    return {
        "status": "ok" if run.returncode == 0 and rejected == 0 else "failed",
        "version": version.stdout.split("\n")[0].strip(),
        "returncode": run.returncode,
        "seconds": round(seconds, 3),
        "startup_seconds": round(startup, 3),
        "internal_seconds": float(summary.group(1)) if summary else None,
        "rows": rows,
        "requests": requests,
        "non_2xx": rejected,
        "syncs": len(families),
        "output_tail": (run.stdout + run.stderr).strip().splitlines()[-5:],
        "config": "drt run: DuckDB source over Parquet, rest_api destination, body_mode batch, "
        "max_records_per_request = the API's row limit (Customer.io batch: as many ops as always fit in 500 KB), "
        "no rate limit",
    }
