"""Vertex AI's documented limits that the suite checks before a call (../shared/docs/limits.md).
A fact table: imports nothing of ours."""

PREDICT_PAYLOAD_BYTES = 1_572_864  # JSON body of one online prediction on a shared endpoint
MAX_DISPLAY_NAME = 128  # characters in an endpoint's or model's display name
MAX_LABELS = 64  # labels on one resource
LOG_RETENTION_DAYS = 30  # how long Cloud Logging's _Default bucket keeps entries
