"""Model chat formats against transformers: chatml (SmolLM2's template from its GGUF) and llama3 (a test-written
Llama-3 tokenizer_config.json) render token for token what `apply_chat_template` renders, ReAct trajectories enter
them as assistant/user turns, `template: auto` picks them, and what they cannot render is a clear error."""

from __future__ import annotations

import json

import pytest
import transformers
from data_support import FIREACT, fixture_conversations
from tokenizer_support import (LLAMA2_CHAT_TEMPLATE, SMOLLM2_DEFAULT_SYSTEM, llama2_style_tokenizer, llama3_dir,
                               random_texts, smollm2_dir, write_tokenizer_dir)
from tokenizers import Tokenizer as Raw

from agentjax.data.conversation import Conversation, Turn
from agentjax.data.formats import read_conversations
from agentjax.data.templates import ChatMLTemplate, Llama2ChatTemplate, Llama3Template, get_template
from agentjax.data.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def fireact(shared_data):
    return list(read_conversations(shared_data / FIREACT / "multitask_multimethod.jsonl", "fireact"))


@pytest.fixture(scope="module")
def families(shared_data, fireact):
    """name -> (agentjax tokenizer, transformers tokenizer) over the same tokenizer folder."""
    texts = tuple(t.content for c in read_conversations(shared_data / FIREACT / "hotpotqa.jsonl", "fireact") for t in c.turns)
    folders = {"chatml": smollm2_dir(), "llama3": llama3_dir(texts)}
    return {name: (load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder)))
            for name, folder in folders.items()}


def multi_turn(fireact, shared_data, lead: str) -> list[Conversation]:
    """FireAct trajectories (replies, `Observation:` tool turns; every 25th, with and without a system prompt), every
    fixture conversation (system prompts, tool/function turns, several replies), and one with contents padded by
    whitespace (`lead` before each, for formats that trim it)."""
    system = Turn("system", "Solve the question with the tools: search[query], finish[answer].")
    picked = fireact[::25]
    padded = Conversation(tuple(Turn(role, lead + text) for role, text in (
        ("system", "Be brief. "), ("user", "padded question 12 "), ("assistant", "spaced  reply \n"), ("tool", "3 results \n"),
        ("user", "Still there?"), ("assistant", "Yes."))))
    return picked + [c.replace(turns=(system,) + c.turns) for c in picked[::2]] + fixture_conversations(shared_data) + [padded]


def reference_ids(hf, messages, generation_prompt: bool) -> list[int]:
    out = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_renders_token_for_token_what_apply_chat_template_renders(families, fireact, shared_data, name):
    """For every conversation and every assistant turn k: prompt(turns before k) == apply_chat_template(those turns,
    add_generation_prompt=True), and encode(all turns) == apply_chat_template(all turns) up to the line break the
    format writes after the last end-of-turn token. SmolLM2's template adds its default system prompt to a
    conversation without one; agentjax's `system_prompt` option does the same. (ChatML keeps contents as they are:
    one that starts with whitespace tokenizes apart from the `role\\n` before it, where transformers may merge
    across, because the renderer keeps that token boundary to weigh the reply exactly; llama3 trims contents.)"""
    tok, hf = families[name]
    options = {"system_prompt": SMOLLM2_DEFAULT_SYSTEM} if name == "chatml" else {}
    template = get_template(name, tok, **options)
    checked = 0
    for conv in multi_turn(fireact, shared_data, lead=" \n " if template.strip_content else ""):
        for k, turn in enumerate(conv.turns):
            if turn.role == "assistant":
                head = conv.replace(turns=conv.turns[:k])
                assert template.prompt(head) == reference_ids(hf, template.messages(head), True), (conv.origin, k)
                checked += 1
        ours, full = list(template.encode(conv).ids), reference_ids(hf, template.messages(conv), False)
        assert full[: len(ours)] == ours and tok.decode(full[len(ours):]) in ("", "\n"), conv.origin
    assert checked > 100


@pytest.mark.parametrize("name", ["chatml", "llama3"])
def test_loss_weights_cover_exactly_the_assistant_contents_and_end_of_turn_tokens(families, fireact, name):
    """With every reply trained, the weighted tokens are, in order, each reply's content tokens then its end-of-turn
    token (<|im_end|> / <|eot_id|>), and nothing else: no role header, no observation, no system prompt."""
    tok, _ = families[name]
    template = get_template(name, tok)
    for conv in fireact[::50]:
        enc = template.encode(conv.replace(turns=tuple(Turn(t.role, t.content, t.role == "assistant") for t in conv.turns)))
        expected = [i for t in conv.turns if t.role == "assistant"
                    for i in tok.encode(template.reply_text(t.content)) + [template.eot_id]]
        assert list(enc.ids[enc.weights > 0]) == expected
        assert set(enc.weights.tolist()) <= {0.0, 1.0}


def test_react_trajectories_become_assistant_and_user_observation_turns(families):
    """A ReAct trajectory renders as assistant Thought/Action turns and user `Observation:` turns; generation stops at
    the end-of-turn token (and EOS) and at `\\nObservation:`."""
    tok, _ = families["chatml"]
    template = get_template("chatml", tok)
    conv = Conversation((Turn("user", "Question: Is the Danube longer?"), Turn("assistant", "Thought: check.\nAction: search[Danube]", True),
                         Turn("tool", "2,850 km."), Turn("assistant", "Action: finish[yes]", True)))
    assert template.spell(list(template.encode(conv).ids)) == (
        "<|im_start|>user\nQuestion: Is the Danube longer?<|im_end|>\n<|im_start|>assistant\nThought: check.\n"
        "Action: search[Danube]<|im_end|>\n<|im_start|>user\nObservation: 2,850 km.<|im_end|>\n"
        "<|im_start|>assistant\nAction: finish[yes]<|im_end|>")
    assert template.stop_strings == ("\nObservation:",) and template.end_ids == (tok.special_id("<|im_end|>"),)
    l3, _ = families["llama3"]
    assert get_template("llama3", l3).end_ids == (l3.special_id("<|eot_id|>"),)


def test_auto_takes_the_tokenizer_s_own_chat_template_family(families, tmp_path):
    """`template: auto` is chatml for SmolLM2's tokenizer, llama3 for the Llama-3 one (options pass through), and
    llama2-chat for a Llama-2-style tokenizer.json carrying Llama-2's chat template."""
    assert type(get_template("auto", families["chatml"][0])) is ChatMLTemplate
    auto = get_template("auto", families["llama3"][0], system_prompt="Be brief.")
    assert type(auto) is Llama3Template and auto.system_prompt == "Be brief."
    raw, config = llama2_style_tokenizer(random_texts(300), legacy=False)
    llama2 = load_tokenizer(write_tokenizer_dir(tmp_path, raw, {**config, "chat_template": LLAMA2_CHAT_TEMPLATE}))
    assert type(get_template("auto", llama2)) is Llama2ChatTemplate


def test_what_the_renderer_cannot_do_is_an_error_naming_the_file_and_the_missing_piece(families, tmp_path):
    """A tokenizer lacking a control token the template needs, no chat template for auto, an unknown chat format,
    and a chatml-looking template that writes something else: each a ValueError naming the tokenizer file."""
    l3, _ = families["llama3"]
    with pytest.raises(ValueError, match=r"llama3-.*tokenizer.json: template 'chatml' needs the special token '<\|im_start\|>'"):
        get_template("chatml", l3)
    folder = smollm2_dir()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    raw = json.loads((folder / "tokenizer.json").read_text())
    def with_template(name, chat_template):
        target = write_tokenizer_dir(tmp_path / name, Raw.from_str(json.dumps(raw)), {**config, "chat_template": chat_template})
        return load_tokenizer(target)

    with pytest.raises(ValueError, match=r"none/tokenizer.json: template auto needs a chat template"):
        get_template("auto", with_template("none", None))
    with pytest.raises(ValueError, match=r"other/tokenizer.json: its chat template .* is none of the formats"):
        get_template("auto", with_template("other", "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"))
    colon = config["chat_template"].replace("message['role'] + '\n'", "message['role'] + ':\n'")
    assert colon != config["chat_template"]
    with pytest.raises(ValueError, match=r"colon/tokenizer.json: .* looks like chatml but agentjax's chatml template cannot "
                                         r"reproduce it: at character \d+ it writes ':\\n"):
        get_template("auto", with_template("colon", colon))
