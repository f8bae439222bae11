"""Embedded local services on loopback: a SeaweedFS S3 server, an MLflow tracking server and (on
request) a Prefect server with a process worker. Each is started once, health-checked, reused while
it answers, and stopped by `simsiam down`; their state lives under the state dir (`state.py`)."""

from simsiam.services.mlflow_server import MlflowService, mlflow_status, start_mlflow, stop_mlflow
from simsiam.services.prefect_server import prefect_env, prefect_status, start_prefect, stop_prefect, use_local_prefect
from simsiam.services.s3 import S3Service, running_s3, s3_credentials, s3_status, start_s3, stop_s3
from simsiam.services.state import state_dir

__all__ = ["MlflowService", "S3Service", "mlflow_status", "prefect_env", "prefect_status", "running_s3",
           "s3_credentials", "s3_status", "start_mlflow", "start_prefect", "start_s3", "state_dir", "stop_mlflow",
           "stop_prefect", "stop_s3", "use_local_prefect"]
