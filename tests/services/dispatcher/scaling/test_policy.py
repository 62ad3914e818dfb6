"""The scaling policy on scripted backlog curves: time → backlog → replicas."""

from __future__ import annotations

from services.dispatcher.scaling.policy import ScalePolicy
from shared.catalog.models import ScalingConfig


def _replay(
    config: ScalingConfig, curve, until: float, step: float = 1.0, boot_s: float | None = None
) -> list[tuple[float, int, int]]:
    """Tick every `step` seconds; the backend obeys at once. Returns (t, backlog, replicas)."""
    policy, replicas, out, t = ScalePolicy(config, boot_s=boot_s), 0, [], 0.0
    while t <= until:
        backlog = curve(t)
        replicas = policy.decide(t, backlog, replicas).desired
        out.append((t, backlog, replicas))
        t += step
    return out


def _at(trace, t):
    return next(r for tt, _, r in trace if tt == t)


CFG = ScalingConfig(
    backend="local", min_replicas=0, max_replicas=4, target_per_replica=100, scale_down_window_s=10, idle_cooldown_s=20
)


def test_burst_scales_up_at_once_capped_then_down_slowly_then_to_zero():
    def curve(t):
        return 0 if t < 2 else 950 if t < 5 else 150 if t < 30 else 0

    trace = _replay(CFG, curve, 80)
    assert _at(trace, 0) == 0 and _at(trace, 1) == 0
    assert _at(trace, 2) == 4  # 950 / 100 → 10, capped at max_replicas, in one step
    assert _at(trace, 14) == 4  # backlog fell at t=5, but 4 is still in the 10 s window
    assert _at(trace, 15) == 2  # 150 / 100 → 2 once the window has passed
    assert _at(trace, 45) == 1  # backlog 0 since t=30: one worker stays for the 20 s cooldown
    assert _at(trace, 50) == 1
    assert _at(trace, 61) == 0  # cooldown (t=50) plus the window
    assert all(r <= 4 for _, _, r in trace)


def test_no_flapping_around_a_threshold():
    def curve(t):
        return 95 if int(t) % 2 else 105  # recommendation alternates 1, 2, 1, 2 ...

    trace = _replay(CFG, curve, 60)
    replicas = [r for _, _, r in trace]
    changes = sum(1 for a, b in zip(replicas, replicas[1:]) if a != b)
    assert replicas[0] == 2 and changes == 0


def test_activation_threshold_gates_zero_to_one_only():
    cfg = ScalingConfig(
        backend="local",
        max_replicas=3,
        target_per_replica=100,
        activation_backlog=50,
        scale_down_window_s=0,
        idle_cooldown_s=0,
    )
    trace = _replay(cfg, lambda t: 10 if t < 5 else 60 if t < 10 else 20, 15)
    assert [_at(trace, t) for t in (0, 4)] == [0, 0]  # 10 waiting requests do not wake a GPU
    assert _at(trace, 5) == 1
    assert _at(trace, 12) == 1  # once running, 20 requests keep their worker


def test_min_replicas_is_a_floor_even_when_idle():
    cfg = ScalingConfig(
        backend="local", min_replicas=2, max_replicas=5, target_per_replica=10, scale_down_window_s=0, idle_cooldown_s=0
    )
    trace = _replay(cfg, lambda t: 100 if 3 <= t < 6 else 0, 20)
    assert _at(trace, 0) == 2 and _at(trace, 3) == 5 and _at(trace, 20) == 2


def test_each_decision_says_why():
    policy = ScalePolicy(CFG)
    up = policy.decide(0, 250, 0)
    assert up.desired == 3 and "up from 0 to 3" in up.reason and "backlog 250" in up.reason
    hold = policy.decide(1, 0, 3)
    assert hold.desired == 3 and hold.reason == "backlog 0: steady at 3"
    down = policy.decide(12, 0, 3)
    assert down.desired == 1 and down.reason == "backlog 0: down from 3 to 1 (highest of the last 10s)"
    zero = policy.decide(40, 0, 1)
    assert zero.desired == 0 and zero.reason == "idle for 20s: down to zero"


def test_a_measured_boot_time_starts_replicas_ahead_of_a_growing_backlog():
    def curve(t):
        return int(20 * t)  # 20 more requests waiting every second: 400 by t=20

    plain = _replay(CFG, curve, 20)
    ahead = _replay(CFG, curve, 20, boot_s=10)
    # without it: 2 replicas once 101 wait (t=6); with a 10 s start, at t=2 (40 now, 240 expected)
    first_second = {
        name: next(t for t, _, r in trace if r >= 2) for name, trace in (("plain", plain), ("ahead", ahead))
    }
    assert first_second == {"plain": 6.0, "ahead": 2.0}
    assert _at(ahead, 20) == 4 and _at(plain, 20) == 4  # capped alike


def test_a_steady_or_shrinking_backlog_is_not_projected():
    steady = _replay(CFG, lambda t: 150, 30, boot_s=60)
    shrinking = _replay(CFG, lambda t: max(0, 390 - 10 * int(t)), 30, boot_s=60)
    assert {r for _, _, r in steady} == {2}
    assert _at(shrinking, 0) == 4 and _at(shrinking, 2) == 4  # 390 / 100, nothing added
