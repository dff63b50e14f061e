"""The vae-dogs model: the breed-conditional VAE, its checkpoints and its latent operations."""
