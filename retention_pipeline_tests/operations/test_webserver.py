"""The Dagster webserver on loopback loads every job, schedule, sensor and asset group (checked over GraphQL)."""

import os
import socket
import subprocess
import sys
import time

import httpx

QUERY = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        jobs { name }
        schedules { name }
        sensors { name }
        assetGroups { groupName }
      }
    }
  }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_webserver_loads_jobs_schedules_sensor_and_groups(tmp_path):
    port = free_port()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-m", "retention_pipeline.definitions", "-h", "127.0.0.1",
         "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        data = None
        while time.monotonic() < deadline:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": QUERY}, timeout=10)
                nodes = response.json()["data"]["repositoriesOrError"]["nodes"]
                if nodes:
                    data = nodes[0]
                    break
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass
            time.sleep(0.5)
        assert data is not None, "webserver did not answer GraphQL in time"
        assert {"daily_retention", "hourly_retention", "weekly_churn_model"} <= {
            j["name"] for j in data["jobs"]
        }
        assert {s["name"] for s in data["schedules"]} == {
            "hourly_retention_schedule",
            "daily_retention_schedule",
            "weekly_churn_model_schedule",
        }
        assert {s["name"] for s in data["sensors"]} == {"metronome_notifications_sensor"}
        assert {g["groupName"] for g in data["assetGroups"]} == {
            "source", "models", "segments", "destinations", "measurement", "operations",
        }  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
