"""The set denoiser: EDM preconditioning and loss, the transformer over set rows, samplers, Ray Train loop."""
