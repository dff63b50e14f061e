"""Training and evaluation for the vae-dogs VAE (imports the model, never the app)."""
