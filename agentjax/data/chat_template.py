"""`template: auto`: which agentjax template a tokenizer's own Jinja chat template is, and a check that it renders the same.

The family is told by its markers; a probe conversation (system prompt, replies, a tool result, a
final user turn) is then rendered both by the Jinja template, as transformers' `apply_chat_template`
does, and by the agentjax template (templates.py); any difference is an error naming the file and the
first difference.
"""

from __future__ import annotations

import jinja2
import jinja2.ext
import jinja2.sandbox

from agentjax.data.conversation import Conversation, Turn
from agentjax.data.tokenizer import Tokenizer

FAMILIES = (("<|im_start|>", "chatml"), ("<|start_header_id|>", "llama3"), ("[INST]", "llama2-chat"))
PROBE = Conversation((
    Turn("system", "Answer with the tools."), Turn("user", "Question: Which river is longer, the Danube or the Rhine?"),
    Turn("assistant", "Thought: I need the Danube's length.\nAction: search[Danube]"),
    Turn("tool", "The Danube is 2,850 km long."), Turn("assistant", "Action: finish[Danube]"), Turn("user", "Thanks."),
))


def render_jinja(chat_template: str, messages: list[dict], tokenizer: Tokenizer) -> str:
    """The chat template's text for `messages` with the generation prompt, in a sandbox as transformers renders it."""
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                      extensions=[jinja2.ext.loopcontrols])
    env.globals["raise_exception"] = raise_exception
    bos = "" if tokenizer.bos_id is None else tokenizer.piece(tokenizer.bos_id)
    return env.from_string(chat_template).render(messages=messages, add_generation_prompt=True, bos_token=bos,
                                                 eos_token=tokenizer.piece(tokenizer.eos_id))


def chat_template_family(tokenizer: Tokenizer) -> str:
    """The agentjax template named by the markers of `tokenizer`'s own chat template."""
    if not tokenizer.chat_template:
        raise ValueError(f"{tokenizer.source}: template auto needs a chat template, and this tokenizer has none "
                         "(no tokenizer_config.json with chat_template); name the template instead")
    name = next((n for marker, n in FAMILIES if marker in tokenizer.chat_template), None)
    if name is None:
        raise ValueError(f"{tokenizer.source}: its chat template (tokenizer_config.json chat_template) is none of the "
                         f"formats agentjax renders ({[n for _, n in FAMILIES]}); name a template instead")
    return name


def check_renders_like_chat_template(name: str, tokenizer: Tokenizer, messages: list[dict], rendered: str) -> None:
    """Raise unless `rendered` (agentjax's `name` template on PROBE, as text) is what the chat template writes."""
    where = f"{tokenizer.source}: its chat template (tokenizer_config.json chat_template)"
    try:
        expected = render_jinja(tokenizer.chat_template, messages, tokenizer)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"{where} fails to render a conversation: {e}") from None
    if rendered != expected:
        at = next((i for i, (a, b) in enumerate(zip(rendered, expected)) if a != b), min(len(rendered), len(expected)))
        raise ValueError(f"{where} looks like {name} but agentjax's {name} template cannot reproduce it: at character "
                         f"{at} it writes {expected[at:at + 40]!r}, agentjax {rendered[at:at + 40]!r}")
