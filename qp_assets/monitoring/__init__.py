"""Monitoring: performance monitor thread (monitor), PushGateway metrics (metrics), pipeline health gauges
(pipeline_metrics), convergence plots (plots). Submodules are imported lazily by their callers."""
