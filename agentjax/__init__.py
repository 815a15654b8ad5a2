"""agentjax: fine-tune Llama-family models into tool-using agents in JAX, and evaluate them as agents."""

__version__ = "0.1.0"
