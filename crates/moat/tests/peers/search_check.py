"""Checks, with the official openai SDK, that a hosted web search reaches an Anthropic
backend as its own server tool and comes back as OpenAI shapes it: a `web_search_call`
item and `url_citation` annotations (Responses, whole and streamed), annotations on a
chat message (Chat Completions with `web_search_options`). Run by tests/llm_peers.rs
against moat in front of fake_llm.py with FAKE_SEARCH set.

With --anthropic, the other way: the anthropic SDK's web search tool, sent to an OpenAI
search model as `web_search_options`, comes back with the cited text as a text block with
its `web_search_result_location` citation (whole and streamed).

usage: search_check.py BASE_URL MODEL QUERY URL TEXT
       search_check.py --anthropic BASE_URL MODEL URL TEXT
"""

import sys

import openai

if sys.argv[1] == "--anthropic":
    import anthropic

    BASE, MODEL, URL, TEXT = sys.argv[2:6]
    ant = anthropic.Anthropic(base_url=BASE, api_key="moat-test-client-key", max_retries=0, timeout=60)
    args = dict(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "What is moat?"}],
                tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
    whole = ant.messages.create(**args)
    with ant.messages.stream(**args) as stream:
        streamed = stream.get_final_message()
    for how, m in (("whole", whole), ("streamed", streamed)):
        # Whole, the cited span is a block of its own; streamed, the citation arrives
        # after its text, on the block that holds it.
        cited = [b for b in m.content if b.type == "text" and b.citations]
        if len(cited) != 1 or not cited[0].text.endswith(TEXT) or (how == "whole" and cited[0].text != TEXT):
            sys.exit(f"FAILED: {how}: cited blocks {m.content}")
        c = cited[0].citations[0]
        if c.type != "web_search_result_location" or c.url != URL or c.cited_text != TEXT:
            sys.exit(f"FAILED: {how}: citation {c}")
    print("anthropic search ok")
    sys.exit(0)

BASE, MODEL, QUERY, URL, TEXT = sys.argv[1:6]
oai = openai.OpenAI(base_url=BASE + "/v1", api_key="moat-test-client-key", max_retries=0, timeout=60)


def check(ok, what):
    if not ok:
        sys.exit(f"FAILED: {what}")


def check_output(output, how):
    kinds = [item.type for item in output]
    # The text before the search, the search, the text after it (as the backend ran them).
    check(kinds == ["message", "web_search_call", "message"], f"{how}: output items {kinds}")
    search = output[1]
    check(search.status == "completed", f"{how}: search status {search.status}")
    check(search.action.type == "search" and search.action.query == QUERY, f"{how}: {search.action}")
    part = output[2].content[0]
    check(part.text == TEXT, f"{how}: text {part.text!r}")
    check(len(part.annotations) == 1, f"{how}: annotations {part.annotations}")
    a = part.annotations[0]
    check(a.type == "url_citation" and a.url == URL, f"{how}: annotation {a}")
    check(part.text[a.start_index:a.end_index] == TEXT, f"{how}: cited span {a.start_index}..{a.end_index}")


tools = [{"type": "web_search"}]
r = oai.responses.create(model=MODEL, input="What is moat?", tools=tools)
check_output(r.output, "responses.create")

with oai.responses.stream(model=MODEL, input="What is moat?", tools=tools) as stream:
    kinds = [event.type for event in stream]
    final = stream.get_final_response()
for kind in ["response.web_search_call.searching", "response.web_search_call.completed",
             "response.output_text.annotation.added"]:
    check(kind in kinds, f"responses.stream: no {kind} in {kinds}")
check_output(final.output, "responses.stream")

c = oai.chat.completions.create(
    model=MODEL, messages=[{"role": "user", "content": "What is moat?"}], web_search_options={}
)
m = c.choices[0].message
check(m.content.endswith(TEXT), f"chat: {m.content!r}")
check(len(m.annotations or []) == 1 and m.annotations[0].url_citation.url == URL, f"chat: {m.annotations}")
check("moat_web_searches" not in (m.model_extra or {}), "chat: moat's private field reached the client")
print("search ok")
