"""A scripted LLM backend for driving real agent clients through moat (loopback only).

usage: fake_llm.py PORT LOG

It speaks both APIs: POST /v1/chat/completions (OpenAI) and POST /v1/messages
(Anthropic), streamed when the request says so. What it answers depends on the request,
not on arrival order, since clients send side requests (titles) concurrently:
  - no tools (a side request, or an editor)    -> the text FAKE_TEXT ({"title": "Shell check"})
  - tools, and no tool result yet              -> one call: FAKE_TOOL with FAKE_ARGS
                                                  (default Bash {"command": FAKE_CMD})
  - tools, and a tool result in the messages   -> "The command printed: <the result>"
FAKE_TEXT is its text answer. Every request body is appended to LOG as one JSON line.
With FAKE_SEARCH set, an Anthropic request offering the web search server tool is
answered as Anthropic answers one: the search (for FAKE_SEARCH) the server ran, its
results, and a cited text, SEARCH_TEXT; an OpenAI request with `web_search_options` is
answered as OpenAI's search models answer: the text, with a `url_citation` over
SEARCH_TEXT.
"""
import http.server
import json
import os
import sys
import threading

PORT, LOG = int(sys.argv[1]), sys.argv[2]
CMD = os.environ.get("FAKE_CMD", "echo hi")
# The tool to call and its arguments (default: Bash running CMD).
TOOL = os.environ.get("FAKE_TOOL", "Bash")
ARGS = json.loads(os.environ.get("FAKE_ARGS") or "null") or {"command": CMD, "description": "Run it"}
# The answer to a request without tools (a title, or an editor's whole reply).
TEXT = os.environ.get("FAKE_TEXT", '{"title": "Shell check"}')
SEARCH = os.environ.get("FAKE_SEARCH")
SEARCH_URL, SEARCH_TITLE = "https://example.com/moat", "Moat, the gateway"
SEARCH_TEXT = "Moat is a local-first AI gateway."
lock = threading.Lock()


def offers_search(req):
    return any(str(t.get("type", "")).startswith("web_search_") for t in req.get("tools") or [])


def search_content():
    return [
        {"type": "text", "text": "Let me look that up."},
        {"type": "server_tool_use", "id": "srvtoolu_fake", "name": "web_search", "input": {"query": SEARCH}},
        {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_fake", "content": [
            {"type": "web_search_result", "url": SEARCH_URL, "title": SEARCH_TITLE,
             "encrypted_content": "sealed", "page_age": None}]},
        {"type": "text", "text": SEARCH_TEXT, "citations": [
            {"type": "web_search_result_location", "url": SEARCH_URL, "title": SEARCH_TITLE,
             "encrypted_index": "sealed", "cited_text": SEARCH_TEXT}]},
    ]


def search_events():
    for i, block in enumerate(search_content()):
        if block["type"] == "server_tool_use":
            yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": dict(block, input={})}
            yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}}
        elif block["type"] == "text":
            yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": {
                "type": "text", "text": "", **({"citations": []} if "citations" in block else {})}}
            for c in block.get("citations", []):
                yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                    "type": "citations_delta", "citation": c}}
            yield "content_block_delta", {"type": "content_block_delta", "index": i, "delta": {
                "type": "text_delta", "text": block["text"]}}
        else:
            yield "content_block_start", {"type": "content_block_start", "index": i, "content_block": block}
        yield "content_block_stop", {"type": "content_block_stop", "index": i}


def tool_results(req, anthropic):
    out = []
    for m in req.get("messages", []):
        if not anthropic and m.get("role") == "tool":
            c = m.get("content")
            out.append("".join(p.get("text", "") for p in c) if isinstance(c, list) else str(c))
        if anthropic and isinstance(m.get("content"), list):
            for b in m["content"]:
                if b.get("type") == "tool_result":
                    c = b.get("content")
                    out.append("".join(p.get("text", "") for p in c) if isinstance(c, list) else str(c))
    return [o.strip() for o in out]


def decide(req, anthropic):
    if SEARCH and anthropic and offers_search(req):
        return {"search": True}
    if SEARCH and not anthropic and req.get("web_search_options") is not None:
        return {"search": True}
    if not req.get("tools"):
        return {"text": TEXT}
    results = tool_results(req, anthropic)
    if not results:
        return {"call": ("call_fake_1", TOOL, ARGS)}
    return {"text": "The command printed: " + " | ".join(results)}


PREFIX = "Let me look that up. "


def openai_annotations():
    start = len(PREFIX)
    return [{"type": "url_citation", "url_citation": {"url": SEARCH_URL, "title": SEARCH_TITLE,
             "start_index": start, "end_index": start + len(SEARCH_TEXT)}}]


def openai_events(d):
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1, "model": "fake"}
    if "search" in d:
        for delta in ({"role": "assistant", "content": PREFIX}, {"content": SEARCH_TEXT},
                      {"annotations": openai_annotations()}):
            yield None, dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}])
        yield None, dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
        return
    if "text" in d:
        delta = {"role": "assistant", "content": d["text"]}
        finish = "stop"
    else:
        cid, name, args = d["call"]
        delta = {"role": "assistant", "tool_calls": [{"index": 0, "id": cid, "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}]}
        finish = "tool_calls"
    yield None, dict(base, choices=[{"index": 0, "delta": delta, "finish_reason": None}])
    yield None, dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": finish}],
                     usage={"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110})


def openai_whole(d):
    if "search" in d:
        msg, finish = {"role": "assistant", "content": PREFIX + SEARCH_TEXT,
                       "annotations": openai_annotations()}, "stop"
    elif "text" in d:
        msg, finish = {"role": "assistant", "content": d["text"]}, "stop"
    else:
        cid, name, args = d["call"]
        msg = {"role": "assistant", "content": None, "tool_calls": [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}
        finish = "tool_calls"
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1, "model": "fake",
            "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}


def anthropic_content(d):
    if "search" in d:
        return search_content(), "end_turn"
    if "text" in d:
        return [{"type": "text", "text": d["text"]}], "end_turn"
    cid, name, args = d["call"]
    return [{"type": "tool_use", "id": "toolu_fake_1", "name": name, "input": args}], "tool_use"


def anthropic_events(d):
    content, stop = anthropic_content(d)
    yield "message_start", {"type": "message_start", "message": {"id": "msg_fake", "type": "message",
          "role": "assistant", "content": [], "model": "fake", "stop_reason": None,
          "stop_sequence": None, "usage": {"input_tokens": 100, "output_tokens": 0}}}
    block = content[0]
    if "search" in d:
        yield from search_events()
    elif block["type"] == "text":
        yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": block["text"]}}
    else:
        yield "content_block_start", {"type": "content_block_start", "index": 0, "content_block": dict(block, input={})}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}
    if "search" not in d:
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    yield "message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                            "usage": {"output_tokens": 10}}
    yield "message_stop", {"type": "message_stop"}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.reply_json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        anthropic = self.path.split("?")[0].endswith("/v1/messages")
        with lock, open(LOG, "a") as log:
            log.write(json.dumps({"path": self.path, "body": req}) + "\n")
        d = decide(req, anthropic)
        if not req.get("stream"):
            if anthropic:
                content, stop = anthropic_content(d)
                return self.reply_json(200, {"id": "msg_fake", "type": "message", "role": "assistant",
                                             "content": content, "model": "fake", "stop_reason": stop,
                                             "stop_sequence": None,
                                             "usage": {"input_tokens": 100, "output_tokens": 10}})
            return self.reply_json(200, openai_whole(d))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, data in (anthropic_events(d) if anthropic else openai_events(d)):
            head = f"event: {name}\n" if name else ""
            self.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
        if not anthropic:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def reply_json(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
