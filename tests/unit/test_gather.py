"""Merging the workers' metrics (process/gather.py): sums, except what says one thing about the edge."""

from prometheus_client.parser import text_string_to_metric_families

from edgecdn.process.gather import merge

ONE = """# HELP edgecdn_requests_total Requests
# TYPE edgecdn_requests_total counter
edgecdn_requests_total{cache_status="HIT"} 3.0
# HELP edgecdn_build_info Build
# TYPE edgecdn_build_info gauge
edgecdn_build_info{version="1"} 1.0
# HELP process_start_time_seconds Start
# TYPE process_start_time_seconds gauge
process_start_time_seconds 200.0
"""
TWO = (
    ONE.replace("} 3.0", "} 4.0").replace("200.0", "100.0")
    + """# HELP edgecdn_origin_up Up
# TYPE edgecdn_origin_up gauge
edgecdn_origin_up{origin="a"} 1.0
"""
)


def test_counters_sum_and_edge_wide_series_do_not() -> None:
    merged = merge([ONE, TWO, TWO.replace('origin_up{origin="a"} 1.0', 'origin_up{origin="a"} 0.0')])
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(merged.decode())
        for s in family.samples
    }
    assert samples[("edgecdn_requests_total", (("cache_status", "HIT"),))] == 11.0
    assert samples[("edgecdn_build_info", (("version", "1"),))] == 1.0
    assert samples[("process_start_time_seconds", ())] == 100.0
    assert samples[("edgecdn_origin_up", (("origin", "a"),))] == 1.0
