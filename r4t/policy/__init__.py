"""The fan-out LM: prompt format, generation backends (transformers, vLLM), checkpoints and the tiny-model bootstrap."""
