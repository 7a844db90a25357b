"""Derive the exportable feature-asset graph from a Dagster ``Definitions`` object.

The exporter never lists assets by hand: it resolves the Definitions' asset graph, selects the
assets of a job (default ``feature_processing_job``) or of an asset group, checks that every
selected asset is daily partitioned, and returns them in dependency order with their upstream
edges restricted to the selection (an edge through an unselected asset is kept as the transitive
dependency it implies). Each task materializes its asset *with its asset checks*, so assets that
a check reads (``AssetCheckSpec.additional_deps``) are upstream edges too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

DEFAULT_FEATURE_JOB = "feature_processing_job"


class ExportError(ValueError):
    """Bad input for an export: the message names the offending asset, path or option."""


@dataclass(frozen=True)
class ExportedAsset:
    """One daily-partitioned asset as an Airflow task.

    ``selection`` is the string ``dagster asset materialize --select`` accepts (key path joined by
    ``/``); ``task_id`` is an Airflow-legal id derived from it; ``upstream`` holds task ids.
    """

    key: dg.AssetKey
    selection: str
    task_id: str
    upstream: tuple[str, ...]
    group: str | None
    description: str | None


def task_id_for(key: dg.AssetKey) -> str:
    """Airflow task id for an asset key: path parts joined by ``__`` (``[A-Za-z0-9_.-]`` only)."""
    parts = []
    for part in key.path:
        cleaned = "".join(c if (c.isalnum() or c in "_-.") else "_" for c in part)
        parts.append(cleaned)
    return "__".join(parts)


def toposort_keys(deps: Mapping[str, Iterable[str]]) -> list[str]:
    """Kahn topological sort, ties broken by name so output is deterministic.

    ``deps`` maps a node to the nodes it depends on (all of them must be keys of ``deps``).
    Raises ExportError naming the nodes on a cycle.
    """
    remaining = {node: set(parents) for node, parents in deps.items()}
    for node, parents in remaining.items():
        unknown = parents - remaining.keys()
        if unknown:
            raise ExportError(f"{node!r} depends on unknown node(s) {sorted(unknown)}")
    order: list[str] = []
    ready = sorted(n for n, p in remaining.items() if not p)
    while ready:
        node = ready.pop(0)
        order.append(node)
        del remaining[node]
        freed = []
        for other, parents in remaining.items():
            if node in parents:
                parents.discard(node)
                if not parents:
                    freed.append(other)
        ready = sorted(set(ready) | set(freed))
    if remaining:
        raise ExportError(f"dependency cycle among assets: {_describe_cycle(remaining)}")
    return order


def _describe_cycle(remaining: Mapping[str, set[str]]) -> str:
    """One concrete cycle 'a -> b -> a' among nodes that could not be sorted (edges point to parents)."""
    start = sorted(remaining)[0]
    path = [start]
    seen = {start: 0}
    node = start
    while True:
        node = sorted(remaining[node] & remaining.keys())[0]
        if node in seen:
            cycle = path[seen[node] :] + [node]
            return " -> ".join(reversed(cycle))
        seen[node] = len(path)
        path.append(node)


def is_daily(partitions_def: dg.PartitionsDefinition | None) -> bool:
    """True for a time-window partitioning with one partition per calendar day."""
    if not isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        return False
    fields = partitions_def.cron_schedule.split()
    return len(fields) == 5 and fields[0].isdigit() and fields[1].isdigit() and fields[2:] == ["*", "*", "*"]


def select_asset_keys(
    defs: dg.Definitions, job: str | None = None, group: str | None = None
) -> set[dg.AssetKey]:
    """Asset keys of ``group`` if given, else of ``job`` (default ``feature_processing_job``)."""
    if group is not None:
        graph = resolve_graph(defs)
        keys = set(graph.asset_keys_for_group(group))
        if not keys:
            raise ExportError(
                f"asset group {group!r} has no assets (groups: {sorted(g for g in graph.all_group_names if g)})"
            )
        return keys
    job_name = job or DEFAULT_FEATURE_JOB
    graph = resolve_graph(defs)
    declared = {getattr(j, "name", None): j for j in (defs.jobs or [])}
    selection = getattr(declared.get(job_name), "selection", None)
    if isinstance(selection, dg.AssetSelection):
        # An asset job: resolve its selection against the graph without building the job, so a
        # mixed-in asset with other partitions is reported by name below rather than by Dagster.
        keys = set(selection.resolve(graph))
    else:
        try:
            job_def = defs.resolve_job_def(job_name)
        except Exception as exc:  # dagster raises several error types for unknown jobs
            known = sorted(n for n in declared if n) + ["__ASSET_JOB"]
            raise ExportError(f"job {job_name!r} not found in Definitions (jobs: {known})") from exc
        keys = set(job_def.asset_layer.selected_asset_keys)
    if not keys:
        raise ExportError(f"job {job_name!r} selects no assets")
    return keys


def resolve_graph(defs: dg.Definitions):
    """``defs.resolve_asset_graph()`` with dependency cycles reported as ExportError."""
    try:
        graph = defs.resolve_asset_graph()
        graph.toposorted_asset_keys  # noqa: B018  (forces the cycle check)
    except Exception as exc:
        if "ircular" in str(exc) or type(exc).__name__ == "CircularDependencyError":
            raise ExportError(f"dependency cycle among assets: {exc}") from exc
        raise
    return graph


def exported_assets(
    defs: dg.Definitions, job: str | None = None, group: str | None = None
) -> list[ExportedAsset]:
    """The selected assets in dependency order, each checked to be a daily-partitioned materializable asset."""
    graph = resolve_graph(defs)
    selected = select_asset_keys(defs, job=job, group=group)
    for key in sorted(selected, key=lambda k: k.to_user_string()):
        node = graph.get(key)
        if not node.is_materializable:
            raise ExportError(f"asset {key.to_user_string()!r} is not materializable (external/observable)")
        if not node.is_partitioned:
            raise ExportError(
                f"asset {key.to_user_string()!r} is unpartitioned; every exported asset must be daily partitioned"
            )
        if not is_daily(node.partitions_def):
            raise ExportError(
                f"asset {key.to_user_string()!r} has partitions {node.partitions_def}; expected daily time windows"
            )

    def check_deps(key: dg.AssetKey) -> set[dg.AssetKey]:
        """Assets the asset checks of ``key`` read (``AssetCheckSpec.additional_deps``): run after them."""
        deps: set[dg.AssetKey] = set()
        for check_key in graph.get(key).check_keys:
            spec = graph.get_check_spec(check_key)
            deps.update(dep.asset_key for dep in spec.additional_deps or ())
        return deps - {key}

    def selected_ancestors(key: dg.AssetKey) -> set[dg.AssetKey]:
        found: set[dg.AssetKey] = set()
        stack = list(graph.get(key).parent_keys | check_deps(key))
        visited: set[dg.AssetKey] = set()
        while stack:
            parent = stack.pop()
            if parent in visited:
                continue
            visited.add(parent)
            if parent in selected:
                found.add(parent)
            elif graph.has(parent):
                stack.extend(graph.get(parent).parent_keys)
        return found

    by_task = {task_id_for(k): k for k in selected}
    if len(by_task) != len(selected):
        raise ExportError("two selected asset keys map to the same Airflow task id")
    deps = {task_id_for(k): {task_id_for(p) for p in selected_ancestors(k)} for k in selected}
    order = toposort_keys(deps)
    result = []
    for task_id in order:
        key = by_task[task_id]
        node = graph.get(key)
        result.append(
            ExportedAsset(
                key=key,
                selection=key.to_user_string(),
                task_id=task_id,
                upstream=tuple(sorted(deps[task_id])),
                group=node.group_name,
                description=(node.description or "").strip().split("\n")[0] or None,
            )
        )
    return result
