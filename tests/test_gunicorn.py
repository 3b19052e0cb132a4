"""Under real gunicorn with gevent workers: concurrent deliveries of one call still agree."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import requests

from .helpers import answered_call_events, encode, renamed, signed_headers
from .servers import Gunicorn


def test_concurrent_out_of_order_deliveries_across_workers_give_one_correct_row(
    settings, db_rows, redis_client, redis_prefix, agent
):
    settings["RECORD_CALLS"] = "false"
    calls = [renamed(answered_call_events(), f"-g{n}") for n in range(20)]
    # Every event of every call twice, all in flight at once, in a shuffled order.
    deliveries = [body for events in calls for body in events * 2]
    random.Random(7).shuffle(deliveries)

    with Gunicorn(settings, workers=3) as server, requests.Session() as http:
        http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))

        def deliver(body):
            raw = encode(body)
            return http.post(
                f"{server.url}/api/telnyx/webhook",
                data=raw,
                headers={"Content-Type": "application/json", **signed_headers(raw)},
                timeout=30,
            )

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(deliver, deliveries))
        pending = http.get(
            f"{server.url}/api/telnyx/calls/pending", headers=agent.headers, timeout=5
        ).json()

    assert [r.status_code for r in responses] == [200] * len(deliveries)
    results = [r.json()["result"] for r in responses]
    assert results.count("applied") == results.count("duplicate") == len(deliveries) // 2
    logs = db_rows("SELECT outcome, duration, recording_url FROM call_logs")
    assert len(logs) == 20
    assert {(log["outcome"], log["duration"]) for log in logs} == {("answered", 155)}
    assert all(log["recording_url"] for log in logs)
    assert pending == {"success": True, "calls": []}
    for events in calls:
        caller = events[0]["data"]["payload"]["call_control_id"]
        assert redis_client.hget(f"{redis_prefix}call:{caller}", "status") == "ended"
