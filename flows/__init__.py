"""Prefect 3 flows: each opens one run context and runs `simsiam.steps` as its tasks (`tasks.py`); the
pipeline: stage-train, stage-test -> train (or ray-tune-sweep) -> evaluate -> register. Entry points:
flows/stage.py:stage_data, pretrain_flow.py:pretrain, sweep_flow.py:sweep, evaluate_flow.py:evaluate,
pipeline.py:pipeline, embed_flow.py:embed, reproduce_flow.py:reproduce (the paper's claims)."""
