"""The web form in a real browser (headless Chromium): a small GPU does not fit, one click takes what fits, a bad
answer gets the CLI's message beside its field, Create writes the workspace, the workspace's form updates it.

TUNEFORGE_SCREENSHOTS=docs/ keeps screenshots of the page (the README shows them)."""

from __future__ import annotations

import yaml

from helpers.browser import chrome, screenshot, wait_for
from helpers.servers import form_server
from tuneforge.planning import hardware
from tuneforge.planning.answers import Given
from tuneforge.rendering.render import git
from tuneforge.web.form import Form


def test_the_form_in_a_browser_from_does_not_fit_to_a_workspace_on_disk(tmp_path, capsys):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    dest = tmp_path / "gpu-project"
    with form_server(Form(dict(hardware.TYPICAL), dest)) as port, chrome() as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        text = lambda id_: driver.find_element(By.ID, id_).text
        wait_for(driver, lambda d: text("verdict").startswith("fits"))
        assert driver.find_element(By.ID, "dest").get_attribute("value") == str(dest)
        assert not driver.find_element(By.ID, "q-gpu_memory_gb").is_displayed()  # a CPU has no GPU memory to ask

        Select(driver.find_element(By.ID, "hardware")).select_by_value("cuda")
        memory = wait_for(
            driver,
            lambda d: (
                d.find_element(By.ID, "gpu_memory_gb")
                if d.find_element(By.ID, "q-gpu_memory_gb").is_displayed()
                else None
            ),
        )
        memory.send_keys(Keys.CONTROL, "a")
        memory.send_keys("8")
        wait_for(driver, lambda d: text("verdict").startswith("does not fit") and "8 GB given" in text("verdict"))
        suggestions = driver.find_elements(By.CSS_SELECTOR, "#suggestions button.suggestion")
        assert suggestions and all("GB)" in s.text for s in suggestions)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bar .part")) == 5
        screenshot(driver, "form-does-not-fit.png")

        taken = suggestions[0].text.removeprefix("take ").rsplit(" (about", 1)[0]
        suggestions[0].click()
        wait_for(driver, lambda d: text("verdict").startswith("fits") and "of 8 GB" in text("verdict"))
        for change in taken.split(", "):
            key, value = change.split("=")
            assert driver.find_element(By.ID, key).get_attribute("value") == value

        rank = driver.find_element(By.ID, "lora_r")
        rank.send_keys(Keys.CONTROL, "a")
        rank.send_keys("abc")
        wait_for(driver, lambda d: text("error-lora_r"))
        assert text("error-lora_r") == "lora_r: expected a whole number, got 'abc'"
        assert not driver.find_element(By.ID, "create").is_enabled()
        rank.send_keys(Keys.CONTROL, "a")
        rank.send_keys("16")
        wait_for(driver, lambda d: not text("error-lora_r") and d.find_element(By.ID, "create").is_enabled())
        assert not dest.exists()  # nothing is written before Create
        wait_for(driver, lambda d: "train.py" in text("file-list") or d.find_element(By.ID, "files").click())
        screenshot(driver, "form-fits.png")

        driver.find_element(By.ID, "create").click()
        wait_for(driver, lambda d: text("message").startswith("created"))
        assert (
            driver.find_element(By.ID, "open").is_displayed() and driver.find_element(By.ID, "preview").is_displayed()
        )

    answers = yaml.safe_load((dest / ".copier-answers.yml").read_text())
    assert answers["hardware"] == "cuda" and answers["gpu_memory_gb"] == 8 and answers["lora_r"] == 16
    for change in taken.split(", "):
        key, value = change.split("=")
        assert str(answers[key]).lower() == value and key in answers["explicit_answers"]
    assert answers["memory_plan"]["fits"]
    assert (dest / "train.py").is_file() and git(dest, "rev-list", "--count", "HEAD").strip() == "1"


def test_the_workspace_form_previews_an_update_then_applies_it(new_workspace):
    from selenium.webdriver.common.by import By

    workspace = new_workspace("ui-update", targets="pytorch,onnx-cpu")
    form = Form.for_workspace(workspace, dict(hardware.TYPICAL), Given())
    with form_server(form) as port, chrome() as driver:
        driver.get(f"http://127.0.0.1:{port}/")
        text = lambda id_: driver.find_element(By.ID, id_).text
        wait_for(driver, lambda d: text("verdict"))
        assert text("mode") == f"updating {workspace}" and not driver.find_element(By.ID, "create").is_displayed()
        driver.find_element(By.ID, "targets-gguf").click()
        wait_for(driver, lambda d: "finetune/gguf.py" in text("file-list") or d.find_element(By.ID, "files").click())
        driver.find_element(By.ID, "preview").click()
        wait_for(driver, lambda d: text("message").startswith("updating would change"))
        assert "finetune/gguf.py" in driver.find_element(By.ID, "diff").get_attribute("textContent")
        assert not (workspace / "finetune" / "gguf.py").exists()
        driver.find_element(By.ID, "update").click()
        wait_for(driver, lambda d: text("message").startswith("updated"))
    assert (workspace / "finetune" / "gguf.py").is_file()
