"""Prefect 3 flows: each opens one run context and runs `simsiam.steps` as its tasks (`tasks.py`).

    pipeline:  stage-train, stage-test  ->  train (or ray-tune-sweep)  ->  evaluate  ->  register

Entry points for prefect.yaml: flows/stage.py:stage_data, flows/pretrain_flow.py:pretrain,
flows/sweep_flow.py:sweep, flows/evaluate_flow.py:evaluate, flows/pipeline.py:pipeline,
flows/embed_flow.py:embed, flows/reproduce_flow.py:reproduce (the paper's claims as a grid).
"""
