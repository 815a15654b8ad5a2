"""The Llama model, its checkpoints, and conversion to and from Hugging Face."""

from agentjax.model.checkpoint import load_checkpoint, save_checkpoint
from agentjax.model.llama import KVCache, Llama, LlamaConfig, preset

__all__ = ["KVCache", "Llama", "LlamaConfig", "load_checkpoint", "preset", "save_checkpoint"]
