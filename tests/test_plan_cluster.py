"""The `cluster` extra: DES verification fanned out over a Dask cluster gives the same answers as local
processes (skipped where `distributed` is not installed)."""

import pytest

from simulator.planning.verify import close_executor, cluster_executor, verify_many
from simulator.specs.traffic import read_traffic

from .conftest import DATA

distributed = pytest.importorskip("distributed")


def test_dask_cluster_matches_local(tmp_path):
    import yaml

    from simulator.specs.deployment import read_deployment

    deps = []
    for devices in (1, 2):
        p = tmp_path / f"d{devices}.yaml"
        p.write_text(yaml.safe_dump({"schema_version": 1, "model": "llama-3.1-8b", "pools": [
            {"name": "node", "serves": ["prefill", "decode"], "hardware": "h100-sxm", "devices": devices,
             "attention": {"tp": devices, "precision": "fp8"}, "max_seqs": 64}]}))
        deps.append(read_deployment(p))
    traffic = read_traffic(DATA / "plan-small-traffic.yaml")
    from dataclasses import replace

    traffic = replace(traffic, requests=80)
    local = verify_many(deps, traffic, traffic.slo, 4.0, bisect_steps=0, workers=1)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as c:
        ex = cluster_executor(c.scheduler_address)
        try:
            remote = verify_many(deps, traffic, traffic.slo, 4.0, bisect_steps=0, executor=ex)
        finally:
            close_executor(ex)
    for a, b in zip(local, remote):
        assert a["ttft_p_s"] == b["ttft_p_s"] and a["tpot_p_s"] == b["tpot_p_s"]
        assert a["max_rate_per_s"] == b["max_rate_per_s"] and a["slo_met"] == b["slo_met"]
