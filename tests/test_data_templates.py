"""Templates: exact loss weights, BOS/end-of-turn placement, FireAct and Llama-2 fidelity, and train/inference token
parity for every turn (chatml over SmolLM2's tokenizer, llama3 over a Llama-3-style one, the rest over sentencepiece)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers
from data_support import FIREACT, fixture_conversations
from tokenizer_support import LLAMA2_CHAT_TEMPLATE, llama2_style_tokenizer

from agentjax.data.conversation import Conversation, Turn
from agentjax.data.formats import read_conversations
from agentjax.data.templates import TEMPLATES, get_template

NAMES = sorted(TEMPLATES)

ODD = [  # shapes real data has and a chat loop can produce
    Conversation((Turn("system", "Be brief."), Turn("user", "Hi"), Turn("user", "Still there?"), Turn("assistant", "Yes.", True),
                  Turn("assistant", "Anything else?", True), Turn("tool", "{}"), Turn("tool", "x"), Turn("user", "No."),
                  Turn("assistant", "Bye.", True))),
    Conversation((Turn("assistant", "Starts with a reply", True), Turn("tool", "ok"), Turn("assistant", "  spaced  ", True))),
    Conversation((Turn("user", "q"), Turn("assistant", "", True), Turn("user", " lead space"), Turn("assistant", "\nnl\n", True))),
]


@pytest.fixture(scope="module")
def conversations(shared_data):
    """FireAct multi-method trajectories (including its irregular rows), every fixture format, odd shapes."""
    fireact = list(read_conversations(shared_data / FIREACT / "multitask_multimethod.jsonl", "fireact"))
    irregular = [c for c in fireact if c.turns[0].role != "user" or any(
        a.role == b.role == "assistant" for a, b in zip(c.turns, c.turns[1:]))]
    return fireact[::8] + irregular + fixture_conversations(shared_data) + ODD


def only_trained(conv: Conversation, index: int) -> Conversation:
    return conv.replace(turns=tuple(Turn(t.role, t.content, i == index) for i, t in enumerate(conv.turns)))


@pytest.mark.parametrize("name", NAMES)
def test_weights_cover_exactly_the_trained_turns_and_their_end_of_turn(template_tokenizers, conversations, name):
    """Ids ignore train flags; each trained reply weighs exactly its own text then its end-of-turn token; the weights
    add up per turn; a rendering starts with the template's start ids (BOS, or none for chatml)."""
    tok = template_tokenizers[name]
    template = get_template(name, tok)
    start = template.start_ids()
    for conv in conversations:
        enc = template.encode(conv)
        assert enc.ids.dtype == np.int32 and enc.weights.dtype == np.float32 and len(enc.ids) == len(enc.weights)
        assert list(enc.ids[: len(start)]) == start
        untrained = template.encode(only_trained(conv, -1))
        assert np.array_equal(untrained.ids, enc.ids) and not untrained.weights.any()
        total = np.zeros_like(enc.weights)
        for i, turn in enumerate(conv.turns):
            if not turn.train:
                continue
            single = template.encode(only_trained(conv, i))
            assert np.array_equal(single.ids, enc.ids)
            trained_ids = enc.ids[single.weights > 0]
            if turn.role == "assistant":
                assert trained_ids[-1] == template.eot_id
                assert tok.decode(trained_ids[:-1]) == template.reply_text(turn.content)
            total += single.weights
        assert np.array_equal(total, enc.weights)


def test_react_can_train_observations_like_fireact_alpaca(tok, conversations):
    """With train_observations, every tool turn's `Observation: ...` line is trained as well; ids do not change."""
    plain, alpaca = get_template("react", tok), get_template("react", tok, train_observations=True)
    for conv in conversations[:20]:
        enc = alpaca.encode(only_trained(conv, -1))
        assert np.array_equal(plain.encode(conv).ids, enc.ids)
        assert tok.decode(enc.ids[enc.weights > 0]) == "".join(f"Observation: {t.content}\n" for t in conv.turns if t.role == "tool")


@pytest.mark.parametrize("name", NAMES)
def test_prompt_is_the_token_prefix_of_training_ids_at_every_turn(template_tokenizers, conversations, name):
    """For every prefix C and next reply A: encode(C + A) is prompt(C), then the reply's text, then the end-of-turn
    token (for templates writing nothing after a reply, exactly the tokens of the reply text); encode(C) is a prefix
    of encode(C + next turn) and of prompt(C + observations...): the agent loop extends, never re-prefills."""
    tok = template_tokenizers[name]
    template = get_template(name, tok)
    for conv in conversations:
        full = list(template.encode(conv).ids)
        for k, turn in enumerate(conv.turns):
            head = conv.replace(turns=conv.turns[:k])
            closed = list(template.encode(head).ids)
            assert full[: len(closed)] == closed
            prompt = template.prompt(head)
            assert prompt[: len(closed)] == closed
            if turn.role == "assistant":
                with_reply = list(template.encode(conv.replace(turns=conv.turns[: k + 1])).ids)
                generated = with_reply[len(prompt):]
                assert with_reply[: len(prompt)] == prompt and generated[-1] == template.eot_id
                reply_text = tok.decode(generated[:-1])
                assert reply_text == template.reply_text(turn.content)
                if not template.reply_suffix:
                    assert generated[:-1] == tok.encode(reply_text)
                assert template.reply_content(reply_text) == (turn.content.strip() if template.strip_content else turn.content)


def test_react_renders_fireact_plain_text_with_eos_after_each_reply(shared_data, tok):
    """Minus EOS/BOS, the react rendering of a FireAct alpaca example is its instruction line + output, character for
    character; each reply's EOS is followed by the `\\nObservation:` stop string."""
    template = get_template("react", tok)
    stop = template.stop_strings[0]
    path = shared_data / "fireact/finetune/alpaca_format/hotpotqa.json"
    records = list(read_conversations(path, "fireact-alpaca"))
    raw = json.loads(path.read_text())
    for conv, record in zip(records, raw):
        ids = list(template.encode(conv).ids)
        assert tok.decode(ids) == record["instruction"] + "\n" + record["output"]
        text_after_eos = [tok.decode(ids[i + 1 :]) for i, t in enumerate(ids) if t == tok.eos_id]
        assert all(t.startswith(stop) for t in text_after_eos)


def test_llama2_chat_spells_meta_s_layout_with_bos_before_every_inst(tok):
    """llama2-chat renders the text transformers' apply_chat_template writes with Llama-2's chat template: `<s>` before
    every [INST], the system prompt inside the first, a space before and after each reply, then EOS (the space agentjax
    writes before [INST] is what Llama-2's dummy prefix adds there)."""
    conv = Conversation((Turn("system", "Be brief."), Turn("user", "Hi"), Turn("assistant", " Hello.", True),
                         Turn("tool", "42"), Turn("assistant", "Bye.", True)))
    template = get_template("llama2-chat", tok)
    ids = list(template.encode(conv).ids)
    eos = [i for i, t in enumerate(ids) if t == tok.eos_id]
    assert [i for i, t in enumerate(ids) if t == tok.bos_id] == [0, eos[0] + 1] and eos[-1] == len(ids) - 1
    pieces = [tok.decode(ids[1 : eos[0]]), tok.decode(ids[eos[0] + 2 : eos[1]])]
    assert pieces == [" [INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. ", " [INST] 42 [/INST] Bye. "]
    reference = transformers.PreTrainedTokenizerFast(tokenizer_object=llama2_style_tokenizer(["x"], legacy=True)[0],
                                                     bos_token="<s>", eos_token="</s>", chat_template=LLAMA2_CHAT_TEMPLATE)
    assert template.spell(ids) == reference.apply_chat_template(template.messages(conv), tokenize=False)


def test_chat_template_and_system_prompt_option(tok):
    """chat: `<|role|>` lines; a template system_prompt is used only when the conversation has none."""
    template = get_template("chat", tok, system_prompt="You may call tools.")
    conv = Conversation((Turn("user", "Hi"), Turn("assistant", "Hello.", True), Turn("tool", "42")))
    assert tok.decode(template.encode(conv).ids) == (
        "<|system|>\nYou may call tools.\n<|user|>\nHi\n<|assistant|>\nHello.\n<|tool|>\n42\n")
    own = conv.replace(turns=(Turn("system", "Mine."),) + conv.turns)
    assert tok.decode(template.encode(own).ids).startswith("<|system|>\nMine.\n<|user|>")
    assert tok.decode(template.prompt(conv)).endswith("<|tool|>\n42\n<|assistant|>\n")


def test_unknown_template_or_option_is_an_error(tok):
    """Names and options are checked, with the known ones listed."""
    with pytest.raises(ValueError, match="known templates"):
        get_template("alpaca", tok)
    with pytest.raises(ValueError, match="known options"):
        get_template("react", tok, train_obs=True)
