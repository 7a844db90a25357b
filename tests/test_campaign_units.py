"""Campaign expansion and the campaign sensor, without services (fast tier)."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterInstance, build_sensor_context

from qp_assets import campaigns
from qp_assets.vqe.errors import InputError

SPEC = {
    "name": "Small molecules",
    "molecules": ["H2", "HeH+", "LiH"],
    "config": {"basis": "sto3g", "freeze_core": True},
    "matrix": {
        "optimizer": ["L-BFGS-B", "SLSQP", "COBYLA", "SPSA"],
        "initial_state": ["hartree_fock", "random"],
    },
    "seeds": {"start": 1, "count": 21},
}


def test_the_issue_campaign_expands_to_504_checked_requests():
    campaign = campaigns.expand(SPEC, "camp-test-1")
    assert len(campaign.requests) == 3 * 4 * 2 * 21 == 504
    ids = [r["request_id"] for r in campaign.requests]
    assert len(set(ids)) == 504 and ids[0] == "camp-test-1/00000" and ids[-1] == "camp-test-1/00503"
    assert all(i.startswith(campaign.prefix) for i in ids)
    combos = {
        (r["molecule"]["name"], r["optimizer"], r["initial_state"], r["seed"]) for r in campaign.requests
    }
    assert len(combos) == 504  # every combination exactly once
    assert {r["seed"] for r in campaign.requests} == set(range(1, 22))
    assert all(r["freeze_core"] is True and r["basis"] == "sto3g" for r in campaign.requests)


def test_campaign_ids_differ_per_submit_and_name_the_campaign():
    a = campaigns.new_campaign_id("Small molecules", SPEC, now=1.0)
    b = campaigns.new_campaign_id("Small molecules", SPEC, now=2.0)
    assert a != b and a.startswith("camp-small-molecules-") and len(a.rsplit("-", 1)[1]) == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"colour": "red"}, "unknown field(s) ['colour']"),
        ({"molecules": ["H2", "Unobtainium"]}, "field 'molecules' has unknown name(s) ['Unobtainium']"),
        ({"molecules": []}, "field 'molecules' must be a non-empty list"),
        ({"seeds": [1, 1]}, "field 'seeds' repeats a seed"),
        ({"seeds": {"count": 0}}, "count >= 1"),
        (
            {"matrix": {"optimizer": ["NOPE"]}},
            "matrix entry {'optimizer': 'NOPE'}: config: field 'optimizer'",
        ),
        ({"matrix": {"optimizer": []}}, "field 'matrix' must map option names to non-empty lists"),
        ({"config": {"optimizer": "SLSQP"}}, "field(s) ['optimizer'] given twice"),
        ({"seeds": {"start": 0, "count": 20001}}, "exceed the limit of 20000"),
        ({"name": "!!!"}, "field 'name' needs letters or digits"),
    ],
)
def test_bad_campaigns_name_the_field(change, message):
    with pytest.raises(InputError) as err:
        campaigns.expand({**SPEC, **change}, "camp-bad")
    assert message in str(err.value)


def test_spec_files_yaml_and_json(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps(SPEC))
    (tmp_path / "c.yaml").write_text("name: x\nmolecules: [H2]\nseeds: [3, 4]\n")
    assert campaigns.load_spec(tmp_path / "c.json") == SPEC
    assert len(campaigns.expand(campaigns.load_spec(tmp_path / "c.yaml"), "camp-x").requests) == 2
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="is not valid YAML"):
        campaigns.load_spec(tmp_path / "bad.yaml")


def test_shipped_campaign_file_is_the_500_run_one():
    from qp_assets.settings import PROJECT_ROOT

    spec = campaigns.load_spec(PROJECT_ROOT / "campaigns" / "small-molecules-500.yaml")
    assert len(campaigns.expand(spec, "camp-shipped").requests) == 504


def test_campaign_sensor_adds_partitions_and_refreshes_only_unfinished(monkeypatch):
    from dagster import AssetMaterialization

    from qp_assets.assets.campaigns import PROGRESS_KEY, campaign_sensor

    monkeypatch.setattr(campaigns, "list_campaigns", lambda settings: ["camp-a-1", "camp-b-2"])
    with DagsterInstance.ephemeral() as instance:
        first = campaign_sensor(build_sensor_context(instance=instance))
        assert first.dynamic_partitions_requests[0].partition_keys == ["camp-a-1", "camp-b-2"]
        assert sorted(r.partition_key for r in first.run_requests) == ["camp-a-1", "camp-b-2"]
        instance.add_dynamic_partitions("campaigns", ["camp-a-1", "camp-b-2"])
        instance.report_runless_asset_event(
            AssetMaterialization(PROGRESS_KEY, partition="camp-a-1", metadata={"complete": True})
        )
        instance.report_runless_asset_event(
            AssetMaterialization(PROGRESS_KEY, partition="camp-b-2", metadata={"complete": False})
        )
        second = campaign_sensor(build_sensor_context(instance=instance))
        assert not second.dynamic_partitions_requests
        assert [r.partition_key for r in second.run_requests] == ["camp-b-2"]
