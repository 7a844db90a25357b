"""Shared helpers of the orchestration tests: isolated resources (unique raw prefix + Iceberg namespace),
golden landed files and a Definitions bound to them."""

import dataclasses
import os
import uuid
from typing import Any

from dagster import Definitions

from qp_assets.settings import Settings


@dataclasses.dataclass
class Isolated:
    """A unique S3 key prefix and Iceberg namespace so tests never see other people's data."""

    settings: Settings
    prefix: str
    namespace: str

    @property
    def raw_prefix(self) -> str:
        return f"{self.prefix}raw/topics/"

    def resources(self, **overrides: Any) -> dict[str, Any]:
        from qp_assets.resources import default_resources
        from qp_assets.resources.core import IcebergCatalogResource, LandingResource

        s = self.settings
        res = default_resources(s)
        res["landing"] = LandingResource(bucket=s.bucket, raw_prefix=self.raw_prefix)
        fields = {
            "catalog_name": s.iceberg_catalog_name,
            "catalog_uri": s.iceberg_catalog_uri,
            "warehouse": s.iceberg_warehouse,
            "s3_endpoint_url": s.s3_endpoint_url,
            "aws_access_key_id": s.aws_access_key_id,
            "aws_secret_access_key": s.aws_secret_access_key,
            "aws_region": s.aws_region,
            "namespace": self.namespace,
        }
        res["iceberg"] = IcebergCatalogResource(**{**fields, **overrides})
        return res

    def s3(self):
        from qp_assets.s3 import s3_client

        return s3_client(self.settings)

    def sink(self):
        from qp_assets.features.golden import LandingSink

        return LandingSink(s3_client=self.s3(), bucket=self.settings.bucket, prefix=self.prefix)

    def cleanup(self) -> None:
        """Remove the test's landed objects, its Iceberg tables and namespace."""
        from qp_assets.features.catalog import sql_catalog

        catalog = sql_catalog(self.settings)
        if (self.namespace,) in catalog.list_namespaces():
            for ident in catalog.list_tables(self.namespace):
                catalog.purge_table(ident)
            catalog.drop_namespace(self.namespace)
        catalog.engine.dispose()
        client = self.s3()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=self.prefix
        )
        for page in pages:
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.settings.bucket, Delete={"Objects": keys})


def isolated(settings: Settings) -> Isolated:
    tag = uuid.uuid4().hex[:10]
    return Isolated(settings, prefix=f"tests/orch-{tag}/", namespace=f"orch_{tag}")


def feature_definitions(resources: dict[str, Any], job_name: str = "feature_processing_job") -> Definitions:
    """Assets, checks and the feature job of the product, bound to ``resources``."""
    from qp_assets.assets.checks import feature_table_checks
    from qp_assets.assets.features import build_feature_assets
    from qp_assets.assets.jobs import build_feature_job
    from qp_assets.assets.raw import raw_vqe_results

    # tests retry a failed feature step after seconds, not the product's 20 minutes
    os.environ.setdefault("QP_FEATURE_RETRY_DELAY_S", "10")
    return Definitions(
        assets=[raw_vqe_results, build_feature_assets()],
        asset_checks=[feature_table_checks],
        jobs=[build_feature_job()],
        resources=resources,
    )


def stop_process_groups(procs, wait_s: float = 30.0) -> None:
    """End processes started with ``start_new_session=True`` (a ``dagster-daemon``, a webserver): SIGTERM
    to each one's process group, up to ``wait_s`` seconds for each to exit, then SIGKILL to the groups
    (run workers, code servers and JVMs they started may outlive them)."""
    import signal
    import subprocess

    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for proc in procs:
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
