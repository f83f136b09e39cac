"""Soft-GRPO: advantages, policy losses, Ray actors for rollouts, rewards and the learner, the training driver."""
