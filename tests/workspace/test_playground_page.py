"""The workspace's playground page in a real browser (headless Chromium), against a stand-in for serve.py's API
that records what the page sends: each request carries the page's temperature and max tokens and the config's
top_p, so a config with a top_p below 1 is sampled as configured. tests/e2e/test_playground_e2e.py runs the page
against the real serve.py on a trained model."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from helpers.browser import chrome, wait_for
from helpers.project import ROOT
from helpers.servers import in_thread

PAGE = ROOT / "templates" / "workspace" / "{% if include.serve %}playground{% endif %}"
SETTINGS = {
    "models": ["base", "tuned"],
    "system": "Be brief.",
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 32,
    "prompt": "How often should I water a snake plant?",
}
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def stand_in_api(received: list[dict]):
    """The page's files and serve.py's two routes, answering each chat request with one streamed word."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, data: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/favicon.ico":  # as serve.py answers it
                self.send_response(204)
                return self.end_headers()
            if self.path == "/v1/playground":
                return self.reply(json.dumps(SETTINGS).encode(), "application/json")
            file = PAGE / ("index.html" if self.path == "/" else self.path.lstrip("/"))
            if file.suffix not in TYPES or not file.is_file():
                return self.send_error(404)
            self.reply(file.read_bytes(), TYPES[file.suffix])

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(request)
            events = [
                {"choices": [{"delta": {"content": "Weekly."}}]},
                {"choices": [], "usage": {"completion_tokens": 1}},
            ]
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self.reply(body.encode(), "text/event-stream")

    return in_thread(ThreadingHTTPServer(("127.0.0.1", 0), Handler))


def test_each_request_carries_the_pages_settings_and_the_configs_top_p():
    from selenium.webdriver.common.by import By

    received: list[dict] = []
    with stand_in_api(received) as port, chrome() as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert not driver.find_element(By.ID, "picture-label").is_displayed()  # a model of text: no picture offered
        driver.find_element(By.ID, "compare").click()
        driver.find_element(By.ID, "send").click()
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".speed[data-tokens='1']")) == 2)
    assert [r["model"] for r in received] == ["base", "tuned"]
    for request in received:
        assert (request["temperature"], request["top_p"], request["max_tokens"]) == (0.7, 0.9, 32)
        assert request["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": SETTINGS["prompt"]},
        ]
        assert request["stream"] is True and request["stream_options"] == {"include_usage": True}


def test_a_picture_goes_with_the_message_where_the_models_read_pictures(monkeypatch):
    """A workspace about pictures: the page offers a file; the chosen picture goes as OpenAI's image_url part with
    a data: URL before the text, is shown in the conversation, and is not sent again with the next message."""
    import base64

    from selenium.webdriver.common.by import By

    picture = ROOT / "templates" / "workspace" / "data" / "{% if include.images %}images{% endif %}" / "red_circle.png"
    monkeypatch.setitem(SETTINGS, "images", True)
    received: list[dict] = []
    with stand_in_api(received) as port, chrome() as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert driver.find_element(By.ID, "picture-label").is_displayed()
        driver.find_element(By.ID, "picture").send_keys(str(picture))
        driver.find_element(By.ID, "send").click()
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".speed[data-tokens='1']")) == 1)
        assert driver.find_elements(By.CSS_SELECTOR, ".turn.user img")
        driver.find_element(By.ID, "prompt").send_keys("And now?")
        driver.find_element(By.ID, "send").click()
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".speed[data-tokens='1']")) == 2)
    first, second = received
    url = "data:image/png;base64," + base64.b64encode(picture.read_bytes()).decode()
    assert first["messages"][-1] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": SETTINGS["prompt"]}],
    }
    assert second["messages"][-1] == {"role": "user", "content": "And now?"}  # the picture went once
    assert second["messages"][1] == first["messages"][-1]  # and stays in the conversation
