"""The demo's prior study: an optional upload of the prior study's view and a prior-report box; the
prior is sent last with the prior-aware prompt and its report in the marked section, a report
without its image is a message on the page, and the page has both inputs. The embedded tiny model,
no server."""
from __future__ import annotations

import pytest

from helpers import BUNDLED_IMAGES, demo_chat
from app import gradio_app as app

PRIOR_REPORT = "Moderate left pleural effusion."


@pytest.fixture(scope="module")
def chat(tiny_model):
    with demo_chat(str(tiny_model), None) as chat_:
        yield chat_


def test_the_prior_goes_last_with_its_report(chat):
    prior = str(BUNDLED_IMAGES / "2_2.png")
    steps = list(chat.new_report(None, "2_1.png", "en", app.prompts.template("en", 0), "", 16, 0, None, prior,
                                 f"  {PRIOR_REPORT}\n"))
    history, state, status, preview, _ = steps[-1]
    user = state["messages"][0]["content"]
    assert len(state["images"]) == 2 and user.startswith("<image><image>Write a radiology report for the current")
    assert user.endswith(f"[PRIOR REPORT]\n{PRIOR_REPORT}\n[END OF PRIOR REPORT]")
    assert "compared with the prior study" in status and "not for diagnosis" in status
    assert history[-1]["role"] == "assistant" and preview.size[0] > 2 * 512 - 1
    # Chinese, with a second view: current views first, the prior last, the template names both views
    _, state, _, _, _ = list(chat.new_report(None, "2_1.png", "zh", app.prompts.template("zh", 4), "", 16, 0,
                                             str(BUNDLED_IMAGES / "1447_1.png"), prior, ""))[-1]
    assert len(state["images"]) == 3 and state["messages"][0]["content"].startswith("<image>" * 3 + "请分析本次两张")
    assert "[既往报告]" not in state["messages"][0]["content"]  # no report typed: no empty section
    # a free-text question keeps its words and gets the marked prior report
    _, state, _, _, _ = list(chat.new_report(None, "2_1.png", "en", app.FREE_TEXT, "What changed?", 16, 0, None,
                                             prior, PRIOR_REPORT))[-1]
    assert state["messages"][0]["content"].startswith("<image><image>What changed?\n\n[PRIOR REPORT]")


def test_a_prior_report_without_its_image_is_a_message(chat):
    history, state, status, _, _ = list(chat.new_report(None, "2_1.png", "en", None, "", 16, 0, None, None,
                                                        PRIOR_REPORT))[-1]
    assert history == [] and state is None and "Upload the prior study's view" in status


def test_the_page_has_the_prior_inputs(chat):
    demo = app.build_demo(chat)
    ids = {c.get("props", {}).get("elem_id") for c in demo.config["components"]}
    assert {"prior_view", "prior_report"} <= ids
