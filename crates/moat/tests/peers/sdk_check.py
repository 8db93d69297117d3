"""Drives moat with the official anthropic and openai SDKs (Messages, Chat Completions and
the Responses API); run by tests/llm_peers.rs.

usage: sdk_check.py [--responses-only] BASE_URL MODEL...
       (each MODEL is routed by moat to a real backend; --responses-only runs only the
       Responses API cases, for a backend that serves that API and no other)

Every call is checked for what a user of the SDK relies on; the first failure exits
non-zero with a message naming the model, the SDK and the case.
"""

import json
import sys

import anthropic
import openai

ARGS = sys.argv[1:]
RESPONSES_ONLY = ARGS[:1] == ["--responses-only"]
if RESPONSES_ONLY:
    ARGS = ARGS[1:]
BASE, MODELS = ARGS[0], ARGS[1:]
KEY = "moat-test-client-key"
ant = anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0, timeout=120)
oai = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=120)

HELLO = [{"role": "user", "content": "Say hello to me."}]
ASK = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
TOOLS_A = [{"name": "get_weather", "description": "Weather for a city", "input_schema": SCHEMA}]
TOOLS_O = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather for a city", "parameters": SCHEMA},
    }
]


def check(ok, what):
    if not ok:
        raise AssertionError(what)


def anthropic_cases(model):
    info = ant.models.retrieve(model)
    check(info.id == model and info.type == "model", f"models.retrieve: {info}")
    m = ant.messages.create(model=model, max_tokens=16, messages=HELLO)
    check(m.type == "message" and m.role == "assistant", f"message shape: {m}")
    check(m.content and m.content[0].type == "text" and m.content[0].text, f"text: {m}")
    check(m.stop_reason in ("end_turn", "max_tokens", "stop_sequence"), f"stop_reason: {m.stop_reason}")
    check(m.usage.output_tokens > 0, f"usage: {m.usage}")

    with ant.messages.stream(model=model, max_tokens=16, messages=HELLO) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    check(text, "streamed text is empty")
    check(final.content[0].text == text, f"final message {final.content} != streamed {text!r}")
    check(final.stop_reason is not None and final.usage.output_tokens > 0, f"final: {final}")

    m = ant.messages.create(
        model=model, max_tokens=64, tools=TOOLS_A,
        tool_choice={"type": "any"}, messages=ASK,
    )
    uses = [b for b in m.content if b.type == "tool_use"]
    check(uses and uses[0].name == "get_weather", f"tool_use: {m.content}")
    check(isinstance(uses[0].input, dict), f"tool input: {uses[0].input!r}")
    check(m.stop_reason == "tool_use", f"stop_reason after a tool call: {m.stop_reason}")
    follow = ASK + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 21 C"},
        ]},
    ]
    m2 = ant.messages.create(model=model, max_tokens=16, tools=TOOLS_A, messages=follow)
    check(m2.type == "message" and m2.content, f"answer after the tool result: {m2}")

    with ant.messages.stream(
        model=model, max_tokens=64, tools=TOOLS_A,
        tool_choice={"type": "any"}, messages=ASK,
    ) as s:
        final = s.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    check(uses and isinstance(uses[0].input, dict), f"streamed tool_use: {final.content}")

    try:
        ant.messages.create(model="no-such-model", max_tokens=4, messages=HELLO)
        check(False, "an unknown model was accepted")
    except anthropic.NotFoundError as e:
        check(e.body["error"]["type"] == "not_found_error", f"error body: {e.body}")


def openai_cases(model):
    info = oai.models.retrieve(model)
    check(info.id == model and info.object == "model", f"models.retrieve: {info}")
    r = oai.chat.completions.create(model=model, max_tokens=16, temperature=0, messages=HELLO)
    c = r.choices[0]
    check(c.message.role == "assistant" and c.message.content, f"message: {r}")
    check(c.finish_reason in ("stop", "length"), f"finish_reason: {c.finish_reason}")
    check(r.usage and r.usage.completion_tokens > 0, f"usage: {r.usage}")

    chunks = list(oai.chat.completions.create(
        model=model, max_tokens=16, temperature=0, messages=HELLO,
        stream=True, stream_options={"include_usage": True},
    ))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(text, "streamed text is empty")
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    check(len(finishes) == 1, f"finish reasons: {finishes}")
    check(chunks[-1].usage and chunks[-1].usage.completion_tokens > 0, f"usage chunk: {chunks[-1]}")

    r = oai.chat.completions.create(
        model=model, max_tokens=64, temperature=0, tools=TOOLS_O,
        tool_choice="required", messages=ASK,
    )
    msg = r.choices[0].message
    check(msg.tool_calls and msg.tool_calls[0].function.name == "get_weather", f"tool_calls: {msg}")
    check(isinstance(json.loads(msg.tool_calls[0].function.arguments), dict), "arguments are JSON")
    check(r.choices[0].finish_reason == "tool_calls", f"finish_reason: {r.choices[0].finish_reason}")
    follow = ASK + [
        msg.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "Sunny, 21 C"},
    ]
    r2 = oai.chat.completions.create(model=model, max_tokens=16, temperature=0, tools=TOOLS_O, messages=follow)
    check(r2.choices[0].message is not None, f"answer after the tool result: {r2}")

    stream = oai.chat.completions.create(
        model=model, max_tokens=64, temperature=0, tools=TOOLS_O,
        tool_choice="required", messages=ASK, stream=True,
    )
    calls = {}
    for ch in stream:
        for tc in (ch.choices[0].delta.tool_calls or []) if ch.choices else []:
            entry = calls.setdefault(tc.index, {"name": "", "args": ""})
            if tc.function and tc.function.name:
                entry["name"] = tc.function.name
            if tc.function and tc.function.arguments:
                entry["args"] += tc.function.arguments
    check(calls and calls[0]["name"] == "get_weather", f"streamed tool calls: {calls}")
    check(isinstance(json.loads(calls[0]["args"]), dict), f"streamed arguments: {calls}")

    try:
        oai.chat.completions.create(model="no-such-model", messages=HELLO)
        check(False, "an unknown model was accepted")
    except openai.NotFoundError:
        pass


TOOLS_R = [
    {"type": "function", "name": "get_weather", "description": "Weather for a city", "parameters": SCHEMA}
]


def responses_cases(model):
    r = oai.responses.create(model=model, input="Say hello to me.", max_output_tokens=32, temperature=0)
    check(r.object == "response" and r.status in ("completed", "incomplete"), f"response: {r}")
    check(r.output_text, f"output_text is empty: {r}")
    check(r.usage and r.usage.output_tokens > 0, f"usage: {r.usage}")
    check(r.store, f"stored by default: {r.store}")
    again = oai.responses.retrieve(r.id)
    check(again.id == r.id and again.output_text == r.output_text, f"retrieved: {again}")
    follow_up = oai.responses.create(
        model=model, previous_response_id=r.id, input="Say it again.", max_output_tokens=32, temperature=0,
    )
    check(follow_up.previous_response_id == r.id and follow_up.output, f"chained: {follow_up}")
    # The SDK pages through the chained response's input items: the whole conversation.
    items = list(oai.responses.input_items.list(follow_up.id, order="asc", limit=2))
    texts = [c.text for i in items if i.type == "message" for c in i.content]
    check(len(items) == 3 and texts[0] == "Say hello to me." and texts[-1] == "Say it again.",
          f"input items: {items}")
    oai.responses.delete(r.id)
    try:
        oai.responses.retrieve(r.id)
        check(False, "a deleted response was found")
    except openai.NotFoundError:
        pass

    def run_stream(**kwargs):
        """The stream's events and its final response (completed, or incomplete when the
        model hit max_output_tokens: then the SDK's get_final_response() has nothing)."""
        with oai.responses.stream(**kwargs) as stream:
            events = list(stream)
        ends = [ev for ev in events if ev.type in ("response.completed", "response.incomplete")]
        check(len(ends) == 1, f"one final event: {[ev.type for ev in events]}")
        seqs = [ev.sequence_number for ev in events]
        check(seqs == list(range(len(seqs))), f"sequence numbers: {seqs}")
        return events, ends[0].response

    events, final = run_stream(
        model=model, input=[{"role": "user", "content": "Say hello to me."}],
        instructions="You are brief.", max_output_tokens=32, temperature=0,
    )
    deltas = [ev.delta for ev in events if ev.type == "response.output_text.delta"]
    check(deltas, "no output_text deltas")
    check(final.output_text == "".join(deltas), f"final {final.output_text!r} != streamed {deltas!r}")
    check(final.usage and final.usage.output_tokens > 0, f"final usage: {final.usage}")

    r = oai.responses.create(
        model=model, input=ASK[0]["content"], tools=TOOLS_R, tool_choice="required",
        max_output_tokens=64, temperature=0,
    )
    calls = [o for o in r.output if o.type == "function_call"]
    check(calls and calls[0].name == "get_weather", f"function_call: {r.output}")
    check(isinstance(json.loads(calls[0].arguments), dict), f"arguments are JSON: {calls[0].arguments!r}")
    follow = [
        {"role": "user", "content": ASK[0]["content"]},
        {"type": "function_call", "call_id": calls[0].call_id, "name": calls[0].name, "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"},
    ]
    r2 = oai.responses.create(model=model, input=follow, tools=TOOLS_R, max_output_tokens=16, temperature=0)
    check(r2.status in ("completed", "incomplete") and r2.output, f"answer after the tool result: {r2}")

    events, final = run_stream(
        model=model, input=ASK[0]["content"], tools=TOOLS_R, tool_choice="required",
        max_output_tokens=64, temperature=0,
    )
    arg_deltas = [ev.delta for ev in events if ev.type == "response.function_call_arguments.delta"]
    calls = [o for o in final.output if o.type == "function_call"]
    check(calls and calls[0].name == "get_weather", f"streamed function_call: {final.output}")
    check("".join(arg_deltas) == calls[0].arguments, f"argument deltas {arg_deltas!r} != {calls[0].arguments!r}")

    # A built-in tool the backend cannot run is left out, and the answer says so (a
    # native Responses backend gets the request untouched: its own server decides; an
    # Anthropic one gets web search as its own server tool).
    raw = oai.responses.with_raw_response.create(
        model=model, input="Say hi.", tools=[{"type": "web_search"}], max_output_tokens=16,
    )
    if "native" not in model and "anthropic" not in model:
        check(raw.headers.get("moat-dropped-tools") == "web_search",
              f"the dropped tool is named: {dict(raw.headers)}")
    if "anthropic" in model:
        check(raw.headers.get("moat-dropped-tools") is None,
              f"web search went to the Anthropic backend as its own tool: {dict(raw.headers)}")
    check(raw.parse().status in ("completed", "incomplete"), f"answered: {raw.parse().status}")


failed = False
for model in MODELS:
    suites = (("anthropic", anthropic_cases), ("openai", openai_cases), ("openai responses", responses_cases))
    for name, cases in suites[2:] if RESPONSES_ONLY else suites:
        try:
            cases(model)
            print(f"ok: {name} SDK via {model}")
        except Exception as e:  # noqa: BLE001 - report every failure, then fail
            failed = True
            print(f"FAILED: {name} SDK via {model}: {type(e).__name__}: {e}")
sys.exit(1 if failed else 0)
