"""The OpenAI Agents SDK, on its defaults but for the base URL and key, runs an agent
with a function tool through moat: once over the Responses API (the SDK's default) and
once over Chat Completions. Exits non-zero with what went wrong.

Usage: agents_check.py MODEL
"""
import asyncio
import os
import sys

from agents import Agent, Runner, function_tool, set_default_openai_api, set_tracing_disabled

# Tracing uploads to OpenAI's own servers whatever the base URL; these tests reach
# nothing but loopback. It is telemetry, not part of the conversation under test.
set_tracing_disabled(True)

MODEL = sys.argv[1]
calls = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return f"It is sunny in {city}."


async def run(api: str) -> None:
    set_default_openai_api(api)
    agent = Agent(
        name="weather",
        instructions="Answer with the get_weather tool.",
        tools=[get_weather],
        model=MODEL,
    )
    result = await Runner.run(agent, "What is the weather in Paris?")
    if not calls or calls[-1] != "Paris":
        raise SystemExit(f"{api}: the tool was not called with Paris: {calls}")
    if "sunny" not in str(result.final_output):
        raise SystemExit(f"{api}: the final answer does not use the tool's output: {result.final_output!r}")
    print(f"ok  {api}: {result.final_output!r}")


async def main() -> None:
    # One event loop: the SDK's default client lives in it.
    await run("responses")
    await run("chat_completions")


assert os.environ.get("OPENAI_BASE_URL"), "OPENAI_BASE_URL names moat"
asyncio.run(main())
