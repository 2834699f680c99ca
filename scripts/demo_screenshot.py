"""A screenshot of the ``facelab demo`` page after a photo, for the README (docs/results/demo.png).

    python scripts/demo_screenshot.py                       # the champions, on matplotlib's grace_hopper.jpg
    python scripts/demo_screenshot.py --photo group.jpg --keypoints-model kp.keras --emotion-model em.keras \\
        --classes anger,disgust,fear,happiness,sadness,surprise,neutral --out docs/results/demo.png

Serves the page on 127.0.0.1 (``demo.serve``, as ``facelab demo`` does), uploads the photo in a
headless Chromium (Playwright; ``--chromium``, else ``facelab.serve.browser``'s choice), waits for the answer
and saves the whole page.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", help="default: matplotlib's sample grace_hopper.jpg")
    parser.add_argument("--out", default=str(REPO / "docs" / "results" / "demo.png"))
    parser.add_argument("--keypoints-model")
    parser.add_argument("--emotion-model")
    parser.add_argument("--classes")
    parser.add_argument("--runtime", choices=("keras", "onnx"), default="keras")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--chromium", help="the Chromium executable (default: found on the PATH)")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from facelab.config import load_params
    from facelab.sandbox import free_port
    from facelab.serve import demo
    from facelab.serve.browser import launch

    photo = args.photo
    if photo is None:
        import matplotlib.cbook

        photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    port = free_port()
    classes = args.classes.split(",") if args.classes else None
    app = demo.serve(
        load_params(args.params),
        args.keypoints_model,
        args.emotion_model,
        classes,
        runtime=args.runtime,
        port=port,
        block=False,
    )
    try:
        with sync_playwright() as playwright:
            browser = launch(playwright, args.chromium)
            page = browser.new_page(viewport={"width": args.width, "height": 900})
            page.goto(f"http://127.0.0.1:{port}/")
            page.locator(f"#{demo.UPLOAD_ID} input[type=file]").set_input_files(str(photo))
            page.wait_for_function(
                "([id, name]) => document.getElementById(id).innerText.includes(name)",
                arg=[demo.STATUS_ID, Path(photo).name],
                timeout=300_000,
            )
            page.wait_for_timeout(1000)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out, full_page=True)
            print(f"{args.out}: {page.inner_text(f'#{demo.STATUS_ID}').strip()}")
            browser.close()
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
