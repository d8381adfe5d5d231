"""Vertex AI's documented limits that the suite checks before a call (../shared/docs/limits.md).
A fact table: imports nothing of ours."""

# JSON body of one online prediction, by endpoint type: "Choose an endpoint type", the table's
# "Payload size limit" row (cloud.google.com/vertex-ai/docs/predictions/choose-endpoint-type,
# read 2026-11-26): 1.5 MB on a shared public endpoint, 10 MB on a dedicated one.
PREDICT_PAYLOAD_BYTES = 1_572_864  # shared public endpoint (1.5 MiB)
DEDICATED_PREDICT_PAYLOAD_BYTES = 10_485_760  # dedicated public endpoint (10 MiB)
# Same table, "Inference timeout": 60 s on a shared endpoint; dedicated ones default to 10 min
# (create-public-endpoint page) and may be configured up to an hour.
# python-aiplatform#1158 (2022-04, a maintainer): "The 60s timeout is a Prediction service's
# internal time out", whatever timeout the client passes.
SHARED_INFERENCE_TIMEOUT_S = 60
DEDICATED_DEFAULT_INFERENCE_TIMEOUT_S = 600  # without clientConnectionConfig.inferenceTimeout
DEDICATED_MAX_INFERENCE_TIMEOUT_S = 3600
MAX_DISPLAY_NAME = 128  # characters in an endpoint's or model's display name
MAX_LABELS = 64  # labels on one resource
LOG_RETENTION_DAYS = 30  # how long Cloud Logging's _Default bucket keeps entries


def predict_payload_bytes(*, dedicated: bool) -> int:
    """The largest request body an endpoint of this type accepts."""
    return DEDICATED_PREDICT_PAYLOAD_BYTES if dedicated else PREDICT_PAYLOAD_BYTES
