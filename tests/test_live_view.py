"""The live view's speed and ETA: a moving average over a fixed window of optimizer steps."""
from types import SimpleNamespace

from helpers.train.live_view import LiveView, StepRate, TokenMeter


def test_rate_is_unknown_until_a_step_finished_then_averages_the_window():
    rate = StepRate(window=3)
    rate.add(0.0, 0, 0)
    assert rate.tokens_per_second() is None and rate.eta(10) is None
    rate.add(1.0, 1, 100)
    assert rate.tokens_per_second() == 100.0
    for now, step, tokens in [(2.0, 2, 300), (3.0, 3, 300), (5.0, 4, 900)]:
        rate.add(now, step, tokens)
    # the window holds steps 1..4: 800 tokens in 4 s, 4/3 s per step
    assert rate.tokens_per_second() == 200.0
    assert rate.seconds_per_step() == 4 / 3
    assert rate.eta(6) == 8.0


def test_a_step_seen_twice_keeps_its_first_time():
    rate = StepRate()
    rate.add(0.0, 0, 0)
    rate.add(2.0, 1, 50)
    rate.add(9.0, 1, 50)      # on_train_end after the last step: no new work
    assert rate.tokens_per_second() == 25.0


def test_status_line_says_measuring_before_the_first_step_and_a_real_rate_after():
    meter = TokenMeter()
    view = LiveView(meter, [], notebook=False)
    state = SimpleNamespace(global_step=0, max_steps=4, is_world_process_zero=True)
    view.on_train_begin(None, state, None)
    assert "measuring tok/s" in view.status_line(state) and "ETA -" in view.status_line(state)
    meter.tokens = 512
    state.global_step = 1
    view.on_step_end(None, state, None)
    line = view.status_line(state)
    assert " tok/s" in line and "measuring" not in line and " 0 tok/s" not in line
