"""r4t: set-valued retrieval with an RL-compiled diffusion retriever (R4T, arXiv 2603.06397)."""

__version__ = "0.1.0"
