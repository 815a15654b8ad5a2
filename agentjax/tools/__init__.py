"""The agent's tools: search (SerpAPI, Wikipedia, local BM25 corpus, recorded), calculate, finish; built from config."""

from agentjax.tools.base import Action, Tool, ToolError, ToolResult, parse_action, run_action
from agentjax.tools.config import ToolsConfig
from agentjax.tools.registry import Toolkit, build_tools

__all__ = ["Action", "Tool", "ToolError", "ToolResult", "ToolsConfig", "Toolkit", "build_tools", "parse_action",
           "run_action"]
