"""Training (`agentjax train`), and `load_trained_model(run_dir)` to evaluate or export what a run produced.

The import is lazy so that `agentjax` subcommands that do not train stay quick to start.
"""


def __getattr__(name: str):
    if name == "load_trained_model":
        from agentjax.train.run_dir import load_trained_model

        return load_trained_model
    raise AttributeError(f"module 'agentjax.train' has no attribute {name!r}")


__all__ = ["load_trained_model"]
