"""Deploying a pruned network: inference export, its verification, and latency on the
runtime people deploy with (Paddle Inference on CPU, optionally ONNX Runtime)."""
