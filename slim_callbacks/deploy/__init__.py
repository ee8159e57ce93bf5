"""Deploying a pruned network: the Paddle Inference runtime (save, load, run an inference
model) and the verified export (latency measured on it: :mod:`slim_callbacks.latency`)."""
