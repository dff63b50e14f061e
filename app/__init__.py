"""The vae-dogs web service (FastAPI). Routes translate HTTP to calls of ``model.latent_ops``."""
