"""glm-gateway: an OpenAI-compatible routing gateway for the GLM-4 family."""

__version__ = "0.1.0"
