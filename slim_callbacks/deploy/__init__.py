"""Deploying a pruned network: the Paddle Inference runtime (save, load, run an inference
model) and latency measured side by side on it."""
