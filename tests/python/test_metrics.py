"""`/metrics` on the admin listener, read with the Prometheus project's own text-format parser
(`prometheus_client.parser`), while the official Elasticsearch client sends requests through esgate.
"""

import urllib.request

import pytest
from elasticsearch import BadRequestError
from prometheus_client.parser import text_string_to_metric_families


def scrape(esgate):
    with urllib.request.urlopen(f"{esgate.admin_url}/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode("utf-8")
    samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_the_families_parse_with_their_types(esgate):
    _, types = scrape(esgate)
    assert types["esgate_requests"] == "counter"
    assert types["esgate_request_duration_seconds"] == "histogram"
    assert types["esgate_requests_in_flight"] == "gauge"
    assert types["esgate_upstream_node_up"] == "gauge"
    assert types["esgate_audit_events_dropped"] == "counter"
    assert types["esgate_local_rejections"] == "counter"


def test_counters_move_as_requests_are_sent(esgate, es, connector):
    before, _ = scrape(esgate)

    es.connector.update_error(connector_id=connector, error="metrics test")
    with pytest.raises(BadRequestError):
        es.perform_request(
            "PUT",
            f"/_connector/{connector}/_error",
            headers={"content-type": "application/json", "accept": "application/json"},
            body={"error": 1},
        )
    es.connector.get(connector_id=connector)

    after, _ = scrape(esgate)
    put = dict(route="connector_error", method="PUT")
    assert value(after, "esgate_requests_total", code="200", **put) - value(
        before, "esgate_requests_total", code="200", **put
    ) == 1
    assert value(after, "esgate_requests_total", code="400", **put) - value(
        before, "esgate_requests_total", code="400", **put
    ) == 1
    get = dict(route="passthrough", method="GET", code="200")
    assert value(after, "esgate_requests_total", **get) - value(before, "esgate_requests_total", **get) == 1
    rejections = dict(error_type="x_content_parse_exception")
    assert value(after, "esgate_local_rejections_total", **rejections) - value(
        before, "esgate_local_rejections_total", **rejections
    ) == 1
    count = dict(route="connector_error")
    assert value(after, "esgate_request_duration_seconds_count", **count) - value(
        before, "esgate_request_duration_seconds_count", **count
    ) == 2
    inf = dict(route="connector_error", le="+Inf")
    assert value(after, "esgate_request_duration_seconds_bucket", **inf) == value(
        after, "esgate_request_duration_seconds_count", **count
    )
    # The scrape itself is on the admin port: nothing is in flight on the gateway.
    assert value(after, "esgate_requests_in_flight") == 0
    assert value(after, "esgate_connections_total") >= 1
    assert value(after, "esgate_ready") == 1
    nodes = [labels for (name, labels) in after if name == "esgate_upstream_node_up"]
    assert len(nodes) == 1
    assert value(after, "esgate_upstream_node_up", **dict(nodes[0])) == 1
