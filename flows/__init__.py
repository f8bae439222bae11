"""Prefect 3 flows: thin compositions of `simsiam.steps`.

    stage_data  ->  pretrain | sweep  ->  evaluate  ->  register (champion gate)
    \\__________________________ pipeline ___________________________/

Entry points for prefect.yaml: flows/stage.py:stage_data, flows/pretrain_flow.py:pretrain,
flows/sweep_flow.py:sweep, flows/evaluate_flow.py:evaluate, flows/pipeline.py:pipeline,
flows/reproduce_flow.py:reproduce (the paper's claims as a grid, beside the pipeline).
"""
