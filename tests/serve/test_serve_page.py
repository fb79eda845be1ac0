"""The chat page in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium):
type a Chinese question, watch the answer stream in, see the passages and their source beside it.

`make test` installs chromium when it is missing (Makefile: browser); without it this test fails
with the command to run, rather than skipping: the page is part of the product.
"""

from __future__ import annotations

import shutil

import pytest

QUESTION = "糖尿病的常见症状是什么？"


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("the page test needs Chromium and its driver: `make browser` (as root: "
                    "apt-get install -y chromium chromium-driver fonts-noto-cjk)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--lang=zh-CN"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)  # no driver download: a given path
    yield driver
    driver.quit()


def test_page_streams_an_answer_with_its_passages(browser, rag_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(rag_server.url + "/")
    assert "不构成医疗建议" in browser.find_element(By.ID, "note").text
    wait = WebDriverWait(browser, 60)
    # The server wants a key: the page says so and opens its settings, where the key goes.
    wait.until(lambda d: d.find_element(By.ID, "settings").get_attribute("open") is not None)
    browser.find_element(By.ID, "key").send_keys(rag_server.key)
    # Record the answer's length at every change of the page: a streamed answer grows in several steps.
    browser.execute_script("""
        window.lengths = [];
        new MutationObserver(() => { const b = document.querySelector('.turn.assistant .bubble');
          if (b) window.lengths.push(b.textContent.length); })
          .observe(document.getElementById('log'), {childList: true, subtree: true, characterData: true});""")
    box = browser.find_element(By.ID, "question")
    box.send_keys(QUESTION)
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".turn.assistant .bubble:not(.pending)"))
    answer = browser.find_element(By.CSS_SELECTOR, ".turn.assistant .bubble")
    assert "error" not in answer.get_attribute("class"), answer.text
    assert answer.text.strip()
    assert browser.find_element(By.CSS_SELECTOR, ".turn.user .bubble").text == QUESTION
    passages = browser.find_elements(By.CSS_SELECTOR, ".turn.assistant .passage")
    assert len(passages) == 2
    assert all("内科学教材" in p.text and "糖尿病" in p.text for p in passages)
    assert len(set(browser.execute_script("return window.lengths"))) > 2

    box.send_keys("那应该怎么治疗？")  # a second turn: the history grows on the page
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn.assistant .bubble:not(.pending)")) == 2)
    assert len(browser.find_elements(By.CSS_SELECTOR, ".turn.user")) == 2
    browser.save_screenshot(str(tmp_path / "page.png"))
