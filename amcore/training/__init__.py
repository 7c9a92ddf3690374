"""Training: time sampling, the losses, the fused step and the training loop."""
