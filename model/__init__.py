"""The vae-dogs model: the first stage (``autoencoder``), the latent prior (``diffusion``, behind the one interface of
``prior``) and how it is sampled (``sampler``), checkpoints (``checkpoint``) and the operations the service offers
(``latent_ops``)."""
