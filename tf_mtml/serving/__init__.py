"""tf_mtml.serving: SavedModel export in the TF Serving layout and session-loader checks."""

from tf_mtml.serving.export import (
    export_saved_model,
    latest_version,
    list_versions,
    read_signature_defs,
)
from tf_mtml.serving.session_loader import (
    inputs_from_predict_request,
    predict_request,
    run_signature_with_session_loader,
    serve_in_fresh_process,
)

__all__ = [
    "export_saved_model",
    "inputs_from_predict_request",
    "latest_version",
    "list_versions",
    "predict_request",
    "read_signature_defs",
    "run_signature_with_session_loader",
    "serve_in_fresh_process",
]
