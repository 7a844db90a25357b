"""One home for S3 access: the boto3 client every part of the platform uses.

Path-style addressing (SeaweedFS, MinIO and most S3-compatible stores need it), bounded connect and read
timeouts and a bounded number of retries, so a stuck or absent object store yields an error naming it
instead of a hung run. The endpoint and credentials come from :class:`qp_assets.settings.Settings`.
"""

from __future__ import annotations

from typing import Any

from qp_assets.settings import Settings

#: Seconds to open a connection / to wait for a response, and total attempts per call.
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
MAX_ATTEMPTS = 3


def s3_client(
    settings: Settings | None = None,
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> Any:
    """A boto3 S3 client for ``settings.s3_endpoint_url`` (default: from the environment).

    Health probes pass shorter timeouts and a single attempt.
    """
    settings = settings or Settings.from_env()
    return make_client(
        settings.s3_endpoint_url,
        settings.aws_access_key_id,
        settings.aws_secret_access_key,
        settings.aws_region,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        max_attempts=max_attempts,
    )


def make_client(
    endpoint_url: str | None,
    aws_access_key_id: str | None,
    aws_secret_access_key: str | None,
    region_name: str | None,
    *,
    aws_session_token: str | None = None,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> Any:
    """A path-style boto3 S3 client with explicit endpoint and credentials (``None``: boto3's own lookup).

    ``connect_timeout_s`` / ``read_timeout_s`` bound one attempt (seconds), ``max_attempts`` the attempts.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or None,
        aws_access_key_id=aws_access_key_id or None,
        aws_secret_access_key=aws_secret_access_key or None,
        aws_session_token=aws_session_token or None,
        region_name=region_name or None,
        config=Config(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        ),
    )
