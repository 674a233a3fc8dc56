"""Experiment code, kept apart from the library: the benchmark runner and its HTML report, the VAE
latent-size study and Wang et al.'s mitigation study. The library (forward, posterior, attr,
metrics, generative, visualization, the mitigation attention) never imports from here."""

__all__: list[str] = []
