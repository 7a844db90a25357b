"""What a run worker pays for the result-reuse index: the old Iceberg read vs the S3 index object.

Against a running stack (``QP_HOME`` / ``QP_PORT_OFFSET`` as for ``qp stack up``) whose ``vqe_results`` has
been built at least once since the index object exists (``tests/test_reuse_services.py`` leaves one), each
way of getting the index runs ``--repeats`` times in a fresh Python process, as a run worker or its
prefetch child does (nothing imported yet):

* ``floor``: the interpreter and ``qp_assets.settings`` only (what every variant pays anyway);
* ``iceberg``: the index as the runner read it before (PyIceberg + pyarrow import, SQL catalog, table load,
  scan of ``INDEX_COLUMNS``, ``build_index``);
* ``s3 object``: ``qp_assets.runner.reuse.read_index`` (boto3 import, bounded client, one GET, JSON).

Wall seconds (process start to exit) and CPU seconds (user + system of the child) are
printed per variant as medians, with the ratio iceberg / s3 object. Both variants print a digest of the
index they found: the table says whether they agree (they must, right after a build).

    .venv/bin/python benchmarks/reuse_lookup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

_PRELUDE = "from qp_assets.settings import Settings\nsettings = Settings.from_env()\n"
_DIGEST = (
    "import hashlib\nfrom qp_assets.runner.reuse import encode_index\n"
    "print(len(index or {}), hashlib.sha256(encode_index(index or {})).hexdigest()[:12])\n"
)
VARIANTS = {
    "floor": _PRELUDE + "index = None\n" + _DIGEST,
    "iceberg": _PRELUDE
    + (
        "from qp_assets.features.catalog import load_feature_table\n"
        "from qp_assets.runner.reuse import INDEX_COLUMNS, INDEX_TABLE, build_index\n"
        "table = load_feature_table(INDEX_TABLE, settings)\n"
        "snapshot = table.current_snapshot()\n"
        "rows = table.scan(selected_fields=INDEX_COLUMNS, snapshot_id=snapshot.snapshot_id).to_arrow()\n"
        "index = build_index(rows.to_pylist())\n"
    )
    + _DIGEST,
    "s3 object": _PRELUDE
    + "from qp_assets.runner.reuse import read_index\nindex = read_index(settings, 10.0)\n"
    + _DIGEST,
}


def run_child(code: str, timeout_s: float) -> tuple[float, float, str]:
    """(wall s, CPU s, its last output line) of ``python -c code`` in a fresh process; raises on failure.
    CPU is the growth of this process's ``RUSAGE_CHILDREN`` (user + system): children run one at a time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout_s, check=False)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if child.returncode != 0:
        raise RuntimeError(
            f"child failed ({child.returncode}): {child.stderr.decode(errors='replace')[-600:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, child.stdout.decode().strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per variant (default 5)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one child may take")
    args = parser.parse_args(argv)
    with open("/proc/loadavg") as fh:
        load = " ".join(fh.read().split()[:3])
    print(f"reuse index look-up, {args.repeats} fresh process(es) per variant, load average {load}")
    stats: dict[str, tuple[float, float, set[str]]] = {}
    for _ in range(args.repeats):  # interleaved, so a load change hits every variant alike
        for name, code in VARIANTS.items():
            wall, cpu, digest = run_child(code, args.timeout)
            walls, cpus, digests = stats.get(name, ([], [], set()))
            stats[name] = (walls + [wall], cpus + [cpu], digests | {digest})
    print(f"{'variant':<10} {'wall s p50':>10} {'CPU s p50':>10} {'wall min':>9} {'CPU min':>8}  keys digest")
    for name, (walls, cpus, digests) in stats.items():
        print(f"{name:<10} {statistics.median(walls):>10.2f} {statistics.median(cpus):>10.2f} "
              f"{min(walls):>9.2f} {min(cpus):>8.2f}  {' / '.join(sorted(digests))}")  # fmt: skip
    old, new = stats["iceberg"], stats["s3 object"]
    print(f"ratio iceberg / s3 object: wall {statistics.median(old[0]) / statistics.median(new[0]):.1f}x, "
          f"CPU {statistics.median(old[1]) / statistics.median(new[1]):.1f}x; "
          f"same index: {'yes' if old[2] == new[2] and len(old[2]) == 1 else 'NO'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
