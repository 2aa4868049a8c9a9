"""Prometheus text exposition, checked with prometheus-client's own parser."""

from __future__ import annotations

import math
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rawserve.inference.metrics import (
    CONTENT_TYPE_LATEST,
    DEFAULT_BUCKETS,
    Registry,
    exponential_buckets,
    linear_buckets,
)


def parse(registry: Registry) -> dict[str, tuple[str, str, list[Sample]]]:
    """Family name -> (type, help, samples), as Prometheus would read it."""
    text = registry.render().decode("utf-8")
    assert text.endswith("\n")
    return {
        f.name: (f.type, f.documentation, list(f.samples))
        for f in text_string_to_metric_families(text)
    }


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_content_type() -> None:
    assert CONTENT_TYPE_LATEST == "text/plain; version=0.0.4; charset=utf-8"


def test_every_family_parses() -> None:
    r = Registry()
    requests = r.counter("rawserve_requests", "Requests.", ["protocol", "route", "status"])
    requests.labels("h2", "/v2/models/{name}/infer", 200).inc()
    requests.labels(protocol="h2", route="/v2/models/{name}/infer", status="200").inc(2)
    requests.labels("http/1.1", "/predict", "422").inc()
    cancelled = r.counter("rawserve_cancellations_total", "Cancelled requests.")
    cancelled.inc()
    depth = r.gauge("rawserve_queue_depth", "Queued items.", ["model", "urgency"])
    depth.labels("digits", 3).inc(5)
    depth.labels("digits", 3).dec(2)
    depth.labels("digits", 0).set(1.5)
    ready = r.gauge("rawserve_ready", "1 when models are warm.")
    ready.set(1)
    batch = r.histogram("rawserve_batch_size", "Batch sizes.", ["model"], [1, 2, 4, 8])
    batch.labels("digits").observe(3)

    families = parse(r)
    assert list(families) == [
        "rawserve_requests",
        "rawserve_cancellations",
        "rawserve_queue_depth",
        "rawserve_ready",
        "rawserve_batch_size",
    ]
    kind, help_text, samples = families["rawserve_requests"]
    assert (kind, help_text) == ("counter", "Requests.")
    route = "/v2/models/{name}/infer"
    assert value(samples, "rawserve_requests_total", protocol="h2", route=route, status="200") == 3
    assert value(samples, "rawserve_requests_total", protocol="http/1.1", route="/predict",
                 status="422") == 1  # fmt: skip
    assert value(families["rawserve_cancellations"][2], "rawserve_cancellations_total") == 1
    _, _, samples = families["rawserve_queue_depth"]
    assert value(samples, "rawserve_queue_depth", model="digits", urgency="3") == 3
    assert value(samples, "rawserve_queue_depth", model="digits", urgency="0") == 1.5
    assert value(families["rawserve_ready"][2], "rawserve_ready") == 1
    assert families["rawserve_batch_size"][0] == "histogram"


def test_histogram_buckets_are_cumulative_and_inf_equals_count() -> None:
    r = Registry()
    latency = r.histogram("latency_seconds", "Latency.", ["route"])
    observations = [0.001, 0.005, 0.02, 0.3, 0.3, 4.0, 100.0]
    for v in observations:
        latency.labels("/x").observe(v)
    _, _, samples = parse(r)["latency_seconds"]
    buckets = [(s.labels["le"], s.value) for s in samples if s.name == "latency_seconds_bucket"]
    assert [le for le, _ in buckets][-1] == "+Inf"
    assert len(buckets) == len(DEFAULT_BUCKETS)
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    for le, count in buckets:
        bound = math.inf if le == "+Inf" else float(le)
        # le is inclusive: 0.005 counts in the 0.005 bucket
        assert count == sum(1 for v in observations if v <= bound), le
    assert value(samples, "latency_seconds_count", route="/x") == len(observations)
    assert buckets[-1][1] == len(observations)
    assert value(samples, "latency_seconds_sum", route="/x") == pytest.approx(sum(observations))


def test_unlabelled_histogram_and_custom_buckets() -> None:
    r = Registry()
    h = r.histogram("batch", "Batch size.", buckets=exponential_buckets(1, 2, 7))
    assert h.buckets == (1, 2, 4, 8, 16, 32, 64, math.inf)
    for v in (1, 1, 3, 64, 65, float("nan")):
        h.observe(v)
    _, _, samples = parse(r)["batch"]
    assert value(samples, "batch_bucket", le="1.0") == 2
    assert value(samples, "batch_bucket", le="4.0") == 3
    assert value(samples, "batch_bucket", le="64.0") == 4
    assert value(samples, "batch_bucket", le="+Inf") == 6
    assert value(samples, "batch_count") == 6
    assert linear_buckets(0.5, 0.5, 3) == (0.5, 1.0, 1.5)


def test_label_value_and_help_escaping() -> None:
    r = Registry()
    c = r.counter("weird", 'Help with \\ backslash\nand "quotes".', ["path"])
    nasty = 'a"b\\c\nd}{,='
    c.labels(nasty).inc()
    c.labels("ünïcødé").inc(2)
    text = r.render().decode()
    assert '\\"' in text and "\\\\" in text and "\\n" in text
    assert text.count("\n") == 4, "escaped newlines must not break lines"
    _, help_text, samples = parse(r)["weird"]
    assert help_text == 'Help with \\ backslash\nand "quotes".'
    assert value(samples, "weird_total", path=nasty) == 1
    assert value(samples, "weird_total", path="ünïcødé") == 2


def test_special_values() -> None:
    r = Registry()
    g = r.gauge("g", "Gauge.", ["k"])
    g.labels("inf").set(math.inf)
    g.labels("ninf").set(-math.inf)
    g.labels("nan").set(math.nan)
    g.labels("big").set(1e300)
    g.labels("small").set(1.5e-9)
    _, _, samples = parse(r)["g"]
    assert value(samples, "g", k="inf") == math.inf
    assert value(samples, "g", k="ninf") == -math.inf
    assert math.isnan(value(samples, "g", k="nan"))
    assert value(samples, "g", k="big") == 1e300
    assert value(samples, "g", k="small") == 1.5e-9


def test_gauge_callbacks_are_read_at_scrape_time() -> None:
    queues = {("digits", 0): 1, ("digits", 7): 40}
    r = Registry()
    r.gauge("queue_depth", "Depth.", ["model", "urgency"], callback=lambda: queues)
    r.gauge("one_label", "Depth.", ["model"], callback=lambda: {"digits": 2})
    r.gauge("inflight", "In flight.", callback=lambda: 7)
    per_child = r.gauge("workers_busy", "Busy workers.", ["model"])
    busy = [0]
    per_child.labels("digits").set_function(lambda: busy[0])

    families = parse(r)
    assert value(families["queue_depth"][2], "queue_depth", model="digits", urgency="7") == 40
    assert value(families["one_label"][2], "one_label", model="digits") == 2
    assert value(families["inflight"][2], "inflight") == 7
    assert value(families["workers_busy"][2], "workers_busy", model="digits") == 0
    queues[("digits", 7)] = 3
    busy[0] = 2
    families = parse(r)
    assert value(families["queue_depth"][2], "queue_depth", model="digits", urgency="7") == 3
    assert value(families["workers_busy"][2], "workers_busy", model="digits") == 2


def test_a_failing_callback_does_not_break_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    r = Registry()

    def broken() -> float:
        raise RuntimeError("boom")

    r.gauge("broken", "Raises.", callback=broken)
    r.gauge("bad_shape", "Not a mapping.", ["m"], callback=lambda: 3)
    r.counter("fine", "Still here.").inc()
    families = parse(r)
    assert families["broken"][2] == []
    assert families["bad_shape"][2] == []
    assert value(families["fine"][2], "fine_total") == 1
    assert "boom" in caplog.text


def test_misuse_is_refused() -> None:
    r = Registry()
    c = r.counter("c", "C.", ["a"])
    with pytest.raises(ValueError, match="already registered"):
        r.counter("c_total", "again")
    h = r.histogram("h", "H.")
    with pytest.raises(ValueError, match="already registered"):
        r.gauge("h_count", "clashes with the histogram's series")
    with pytest.raises(ValueError, match="takes 1 label values"):
        c.labels("x", "y")
    with pytest.raises(ValueError, match="takes labels"):
        c.labels(b="x")
    with pytest.raises(ValueError, match=r"use \.labels"):
        c.inc()
    with pytest.raises(ValueError, match="only goes up"):
        c.labels("x").inc(-1)
    with pytest.raises(ValueError, match="invalid metric name"):
        r.gauge("1bad", "x")
    with pytest.raises(ValueError, match="invalid label name"):
        r.gauge("ok", "x", ["__reserved"])
    with pytest.raises(ValueError, match="'le'"):
        r.histogram("h2", "x", ["le"])
    with pytest.raises(ValueError, match="strictly increasing"):
        r.histogram("h3", "x", buckets=[1, 0.5])
    h.observe(1)
    assert r.get("c_total") is c and r.get("nope") is None


def test_remove_and_unregister() -> None:
    r = Registry()
    g = r.gauge("g", "G.", ["model"])
    g.labels("a").set(1)
    g.labels("b").set(2)
    g.remove("a")
    assert [s.labels for s in parse(r)["g"][2]] == [{"model": "b"}]
    r.unregister("g")
    assert r.render() == b""


def test_concurrent_updates_from_threads_are_not_lost() -> None:
    r = Registry()
    c = r.counter("hits", "Hits.", ["worker"])
    h = r.histogram("lat", "Latency.", buckets=[0.5])
    g = r.gauge("level", "Level.")
    n, threads = 20_000, 4

    def work(i: int) -> None:
        child = c.labels("shared")
        for _ in range(n):
            child.inc()
            h.observe(0.25)
            g.inc()
            c.labels(i).inc()

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    families = parse(r)
    assert value(families["hits"][2], "hits_total", worker="shared") == n * threads
    assert value(families["lat"][2], "lat_count") == n * threads
    assert value(families["lat"][2], "lat_bucket", le="0.5") == n * threads
    assert value(families["level"][2], "level") == n * threads
