"""Prefect 3 flows: thin compositions of `simsiam.steps`.

    stage_data  ->  pretrain | sweep  ->  evaluate  ->  register (champion gate)
    \\__________________________ pipeline ___________________________/

Entry points for prefect.yaml: flows/stage.py:stage_data, flows/pretrain.py:pretrain,
flows/sweep.py:sweep, flows/evaluate.py:evaluate, flows/pipeline.py:pipeline,
flows/reproduce.py:reproduce (the paper's claims as a grid, beside the pipeline).
"""
