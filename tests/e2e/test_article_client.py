"""The article's JavaScript client, verbatim, in headless Chromium against the running gateway.

Only the two constants the article tells users to replace (URL and token) are
substituted. The page then calls the article's own `sendPrompt` with its
default model and waits for streamed text in #llmOutput.
"""
import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CLIENT = Path(__file__).with_name("article_client.js").read_text()


def page_html(url: str, token: str) -> str:
    script = CLIENT.replace("wss://your-openclaw-gateway.com/websocket", url)
    script = script.replace("your_secure_api_token", token)
    assert script.count(url) == 1 and script.count(token) == 1
    return f'<!doctype html><html><body><div id="llmOutput"></div><script>{script}</script></body></html>'


def test_the_article_client_streams_text_with_its_default_model(stack, browser):
    page = browser.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.set_content(page_html(stack.url(), stack.api_key))
    page.wait_for_function("socket && socket.readyState === WebSocket.OPEN", timeout=15_000)
    page.evaluate("sendPrompt('Explain the concept of quantum entanglement in simple terms.')")
    page.wait_for_function("document.getElementById('llmOutput').innerText.length > 0", timeout=15_000)
    first_text = page.inner_text("#llmOutput")
    for _ in range(200):  # up to 20 s for the end frame
        if any(line.startswith("LLM Response Ended:") for line in console):
            break
        page.wait_for_timeout(100)
    text = page.inner_text("#llmOutput")
    assert any(line.startswith("LLM Response Started:") for line in console)
    assert any(line.startswith("LLM Response Ended:") for line in console), console
    assert not any(line.startswith("Error from OpenClaw") for line in console), console
    # Tokens arrived as a stream: the text grew after the first token was shown.
    assert len(text) > len(first_text) and len(re.findall(r"\w+", text)) >= 10
    page.close()


def test_the_article_client_is_told_about_a_bad_token_and_does_not_loop(stack, browser):
    page = browser.new_page()
    console = []
    page.on("console", lambda message: console.append(message.text))
    page.set_content(page_html(stack.url(), "your_secure_api_token_is_wrong"))
    page.wait_for_function("socket && socket.readyState === WebSocket.CLOSED", timeout=15_000)
    page.wait_for_timeout(500)
    assert any("Error from OpenClaw" in line for line in console), console
    # A clean close (4401): the article's client reconnects only after an unclean one.
    assert not any("Attempting to reconnect" in line for line in console), console
    page.close()
