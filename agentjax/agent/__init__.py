"""The agent at inference: jitted extend/decode with stop strings (`decode`), the batched episode loop that keeps
each row's KV cache across tool calls (`loop`), prompting methods, the task registry, and evaluation runs."""
