"""The sandbox: provider models (``sim.providers``) behind real SMTP servers on loopback."""
