"""S3 object storage: client factory, versioned dataset staging, verified reader with cache, and the
sources a config names.

This package is an adapter (it imports boto3/pyarrow); the training core never imports it.
"""

from simsiam.storage.client import ObjectStore, S3Settings, open_store, settings_from_env
from simsiam.storage.reader import StagedSource, list_datasets, resolve_dataset
from simsiam.storage.sources import eval_sources, evaluation_sources, open_sources, store_for
from simsiam.storage.staging import DatasetRef, stage_dataset

__all__ = ["DatasetRef", "ObjectStore", "S3Settings", "StagedSource", "eval_sources", "evaluation_sources",
           "list_datasets", "open_sources", "open_store", "resolve_dataset", "settings_from_env", "stage_dataset",
           "store_for"]
