"""Running VQE requests without Dagster: device pinning (``gpu``) and one request end to end
(``process``). The Dagster ops of ``qp_assets.assets.vqe_runner`` are thin wrappers over these."""
