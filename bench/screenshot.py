"""Screenshot of the web page (``GET /``) running a checkpoint, in headless Chromium.

    .venv/bin/python -m bench.screenshot --out docs/page.png

The photo it uploads is a dog the model generated itself (``GET /sample``), so no data set is needed
and no real photo ends up in the picture.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx

from bench.server import ROOT, running_server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, default=ROOT / "checkpoints" / "dogs120")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "page.png")
    p.add_argument("--breed", default="golden_retriever", help="breed of the generated dog to upload")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--window-size=1200,2200",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    with running_server(args.checkpoint) as server, tempfile.TemporaryDirectory() as tmp:
        url = server.url
        photo = Path(tmp) / "generated-dog.png"
        photo.write_bytes(
            httpx.get(f"{url}/sample", params={"n": 1, "breed": args.breed, "seed": 3, "scale": 2}).content
        )
        driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
        try:
            wait = WebDriverWait(driver, 120)
            driver.get(url + "/")
            updates = lambda element_id: int(driver.find_element(By.ID, element_id).get_attribute("data-updates") or 0)  # noqa: E731
            wait.until(lambda _: updates("mix-image") >= 1 and updates("sample-image") >= 1)
            driver.find_element(By.ID, "photo-file").send_keys(str(photo))
            wait.until(lambda _: updates("ancestry-image") >= 1)
            driver.find_element(By.ID, "transfer-button").click()
            driver.find_element(By.ID, "morph-button").click()
            wait.until(lambda _: updates("transfer-image") >= 1 and updates("morph-image") >= 1)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            height = driver.execute_script("return document.body.scrollHeight")
            driver.set_window_size(1200, height + 40)
            driver.save_screenshot(str(args.out))
        finally:
            driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
