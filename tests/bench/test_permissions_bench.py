"""`python -m trove.bench.permissions` runs small and reports what it measured."""

from trove.bench.permissions import bench_expansion, bench_layers


def test_permission_benchmarks_report_sizes_and_latencies():
    expansion = bench_expansion(users=200, groups=20, per_group=10)
    assert expansion["memberships"] == 200 and expansion["p50_ms"] > 0
    layers = bench_layers(50, plain=100)
    assert (layers["acls"], layers["layered"]) == (150, 50)
    assert 0 < layers["p50_ms"] <= layers["p95_ms"]
