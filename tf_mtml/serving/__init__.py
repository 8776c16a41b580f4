"""tf_mtml.serving: SavedModel export in the TF Serving layout, request checks, warmup, config."""

from tf_mtml.serving.export import (
    export_saved_model,
    latest_version,
    list_versions,
    read_signature_defs,
)
from tf_mtml.serving.models_config import (
    models_config,
    parse_models_config,
    write_models_config,
)
from tf_mtml.serving.session_loader import (
    LoadedSavedModel,
    inputs_from_predict_request,
    predict_request,
    run_signature_with_session_loader,
    serve_in_fresh_process,
)
from tf_mtml.serving.task_score import task_score_endpoint
from tf_mtml.serving.warmup import (
    read_warmup_requests,
    replay_warmup,
    replay_warmup_in_fresh_process,
    write_warmup_requests,
)

__all__ = [
    "LoadedSavedModel",
    "export_saved_model",
    "inputs_from_predict_request",
    "latest_version",
    "list_versions",
    "models_config",
    "parse_models_config",
    "predict_request",
    "read_signature_defs",
    "read_warmup_requests",
    "replay_warmup",
    "replay_warmup_in_fresh_process",
    "run_signature_with_session_loader",
    "serve_in_fresh_process",
    "task_score_endpoint",
    "write_models_config",
    "write_warmup_requests",
]
