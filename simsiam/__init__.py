"""simsiam-pipeline: SimSiam (Chen & He, CVPR 2021) core, free of orchestration imports."""

__version__ = "0.1.0"
