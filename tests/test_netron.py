"""Netron, as a user opens a compiled model: every node oqcompile inserts has a name that says
what and where and a one-sentence doc string, and the graph Netron draws in a real browser
(headless Chromium, driven by Selenium) holds the inserted Hadamard, QMatMul and quantization
nodes. .ci/run installs Chromium from Debian; the browser test skips, saying why, only where
it is missing."""

import pathlib
import shutil
import socket

import onnx_ir as ir
import pytest

from oqcompile.compiler import compile_file

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1600,1200"]


@pytest.fixture(scope="module")
def compiled(tiny_export, tmp_path_factory) -> dict[bool, pathlib.Path]:
    """quarot-w4a4-rtn of tiny-llama: {portable: path}."""
    folder = tmp_path_factory.mktemp("netron")
    return {portable: compile_file(tiny_export("tiny-llama"), folder / f"{'portable' if portable else 'lowered'}.onnx",
                                   "quarot-w4a4-rtn", portable=portable).target for portable in (True, False)}


@pytest.mark.parametrize("portable", [True, False])
def test_inserted_nodes_say_what_and_where(compiled, portable):
    inserted = [node for node in ir.load(compiled[portable]).graph
                if node.domain == "oq" or any(key.startswith("oq.") for key in node.metadata_props)]
    assert len(inserted) > 20
    for node in inserted:
        layer, _, what = node.name.partition("/")
        assert layer.split(".")[0] in ("layers", "lm_head", "embed_tokens") and what, node.name
        assert node.doc_string.endswith(".") and node.doc_string.count(". ") == 0, (node.name, node.doc_string)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None or DRIVER is None,
                    reason="no headless Chromium (Debian's chromium and chromium-driver; .ci/run installs them)")
def test_netron_draws_the_inserted_nodes(compiled, tmp_path):
    import netron
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    address = netron.serve(str(compiled[False]), None, address=("127.0.0.1", _free_port()), browse=False)
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(f"http://{address[0]}:{address[1]}/")

        def drawn_or_consent(browser):
            accept = [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Accept" and b.is_displayed()]
            if accept:  # Netron's first-run notice
                accept[0].click()
            return browser.find_elements(By.CSS_SELECTOR, "g.graph-node")

        nodes = WebDriverWait(driver, 60).until(drawn_or_consent)
        titles = {node.text.split("\n")[0] for node in nodes}
        screenshot = tmp_path / "netron.png"
        driver.save_screenshot(str(screenshot))
    finally:
        driver.quit()
        netron.stop(address)
    assert {"Hadamard", "QMatMul", "QuantizePerToken"} <= titles, sorted(titles)
    assert screenshot.stat().st_size > 10_000, screenshot
